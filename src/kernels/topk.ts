/**
 * Top-k selection (`kernels/topk_select.wgsl`, `kernels/topk_scan.wgsl`): per row (TopK) or over
 * the whole batch (BatchTopK), returning ReLU of the kept values and zeros elsewhere. Exactly k values are kept
 * per segment (ties with the k-th value go to the lowest indices), so at most k·segments outputs
 * are nonzero.
 */
import { type Binding, type Gpu, GpuError, type Kernel } from "../gpu/device.ts";
import { bind, type Chunk, chunks } from "../gpu/chunks.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { binary, grid1d } from "./elementwise.ts";
import { type Gate, gatedIf } from "./gate.ts";
import { groups, params, wgsl } from "./source.ts";
import { fillNonzeroBits, type NonzeroBits } from "./sparse.ts";
import { rowsStageable, stagedRowRuns, unusedTexels, wholeTexels } from "./staging.ts";

/** Values each histogram workgroup counts (256 invocations, QUADS quads each). */
const ITEMS_PER_WORKGROUP = 256 * 64;
/**
 * select_rows bounds the k-th value by the k-th of at most 1024 slice maxima, so k must not
 * exceed that. On shorter rows most elements pass that bound and the prefilter costs more than
 * it saves (AuxK's 1536 dead slots with k 384, 1024 rows: 97 ms with it, 76 without).
 */
const PREFILTER_MAX_K = 1024;
const PREFILTER_MIN_LEN = 4096;
/** select_rows' ROW_WG. */
const ROW_INVOCATIONS = 64;

/** Slices per invocation for select_rows' prefilter: about 2k maxima, a power of two up to 16. */
function prefilterChunks(k: number): number {
  const wanted = Math.ceil((2 * k) / ROW_INVOCATIONS);
  return Math.min(16, 2 ** Math.ceil(Math.log2(Math.max(wanted, 1))));
}
/** Register-list lengths of `select_rows_scan` (topk_scan.wgsl), one pipeline each. */
const SCAN_LENGTHS = [8, 16, 32, 64];
/** ROWS_PER_WORKGROUP in topk_scan.wgsl. */
const SCAN_ROWS_PER_WORKGROUP = 64;

/** How per-row top-k runs: one invocation per row with a register list, or radix passes. */
export type RowSelectMethod = "scan" | "radix";

/**
 * The per-row method for k of `segLen`. The scan's insertions cost about k per element kept so
 * far and the radix passes a fixed amount per row plus per element: measured (1024 rows) the
 * scan wins up to k · segLen ≈ 2^18 (k 64 of 1024: 19 vs 33 ms; k 64 of 4096: 74 vs 76; k 8 of
 * 12288: 28 vs 108; 256 rows, k 8 of 256: 0.3 vs 4.4) and loses beyond (k 64 of 12288: 220 vs
 * 112).
 */
function rowSelectMethod(k: number, segLen: number): RowSelectMethod {
  const fits = k <= SCAN_LENGTHS[SCAN_LENGTHS.length - 1];
  return fits && k * segLen <= SCAN_MAX_WORK ? "scan" : "radix";
}
const SCAN_MAX_WORK = 1 << 18;

interface SelectOptions {
  /** Keep the raw selected values instead of ReLU'd ones. */
  raw?: boolean;
  /** Override the per-row method (tests compare both). */
  method?: RowSelectMethod;
  /** A [1] tensor whose value further caps k (read on the GPU, no sync). */
  kLimit?: Tensor;
  /** Select only when the gate opens (decided on the GPU); the output is unwritten otherwise. */
  gate?: Gate;
  /** Also fill these masks with the result's nonzeros (`compressSelection` takes them). */
  masks?: NonzeroBits;
}

/** Uniform fields of topk_select.wgsl's `Params` (topk_scan.wgsl reads the first six). */
interface SelectFields {
  segments: number;
  segLen: number;
  k: number;
  pass?: number;
  offset?: number;
  index0?: number;
  stage0?: number;
  sliceLen?: number;
  maskRow0?: number;
  maskRows?: number;
  maskCols?: number;
  /** Candidate pairs a compacting batch selection has room for. */
  capacity?: number;
}

function selectParams(f: SelectFields): ArrayBuffer {
  return params([
    f.segments,
    f.segLen,
    f.k,
    f.pass ?? 0,
    f.offset ?? 0,
    f.index0 ?? 0,
    f.stage0 ?? 0,
    f.sliceLen ?? 0,
    f.maskRow0 ?? 0,
    f.maskRows ?? 0,
    f.maskCols ?? 0,
    f.capacity ?? 0,
  ]);
}

/** Zeroes masks that select_rows or apply will OR bits into. */
function clearMasks(gpu: Gpu, masks: NonzeroBits | undefined): void {
  if (!masks) return;
  gpu.clear(masks.rowBits);
  gpu.clear(masks.colBits);
}

/**
 * The mask bindings (8, 9) of select_rows and apply, and the fields that describe the whole
 * matrix. Without masks the dispatch's own output (writable already; a read-only binding may not
 * share a buffer with a writable one) stands in.
 */
function maskBindings(values: Tensor, masks: NonzeroBits | undefined) {
  return {
    bindings: (out: Binding) => masks ? [masks.rowBits, masks.colBits] : [out, out],
    fields: { maskRows: values.rows, maskCols: values.cols },
  };
}

function checkK(k: number, segLen: number): void {
  if (!Number.isInteger(k) || k < 0 || k > segLen) {
    throw new GpuError(`top-k: k=${k} must be an integer in [0, ${segLen}]`);
  }
}

/**
 * Top-k of every row: one invocation per row keeping a sorted register list (`select_rows_scan`)
 * for small k, else one workgroup per row doing all radix passes (`select_rows`).
 */
function selectRows(values: Tensor, k: number, options: SelectOptions = {}): Tensor {
  const gpu = values.gpu;
  const [rows, segLen] = [values.rows, values.cols];
  checkK(k, segLen);
  if (k === 0) {
    clearMasks(gpu, options.masks);
    return gpu.zeros(values.shape);
  }
  const method = options.method ?? rowSelectMethod(k, segLen);
  if (method === "scan" && options.masks) {
    // The register-list kernel writes no masks: they come from a pass over its result.
    const out = selectRows(values, k, { ...options, masks: undefined });
    fillNonzeroBits(out, options.masks);
    return out;
  }
  // The radix kernel reads rows from staging textures where they are whole texels and the
  // tensors fit one binding (the dispatches then address rows from the start of the tensor), and
  // not behind a gate, whose copies would run whether it opens or not.
  const staged = !options.gate && method === "radix" && rowsStageable(values) &&
    chunks(gpu, rows, segLen).length === 1;
  const { kernel, out, rowsPerWorkgroup } = method === "scan"
    ? scanKernel(values, k, options)
    : radixKernel(values, k, options, staged);
  const kLimit = options.kLimit ?? gpu.unusedBinding;
  clearMasks(gpu, options.masks);
  const masks = maskBindings(values, options.masks);
  const dispatch = (bindings: (Binding | undefined)[], count: number, uniforms: ArrayBuffer) => {
    const grid = grid1d(Math.ceil(count / rowsPerWorkgroup) * 256); // grid1d counts 256 per group
    gpu.dispatch(kernel, bindings, gatedIf(options.gate, grid), uniforms);
  };
  if (staged) {
    for (const { row0, rows: count, texels } of stagedRowRuns(values)) {
      const start = row0 * segLen;
      const uniforms = selectParams({
        segments: count,
        segLen,
        k,
        offset: start,
        stage0: start,
        maskRow0: row0,
        ...masks.fields,
      });
      dispatch(
        [values, undefined, undefined, out, kLimit, texels, undefined, ...masks.bindings(out)],
        count,
        uniforms,
      );
    }
    return out;
  }
  // Big matrices go in chunks of whole rows. The scan kernel declares no texture or masks.
  const radix = method === "radix";
  for (const c of chunks(gpu, rows, segLen)) {
    const uniforms = selectParams({
      segments: c.count,
      segLen,
      k,
      offset: c.shift,
      maskRow0: c.first,
      ...masks.fields,
    });
    const outChunk = bind(out, c);
    const extra = radix ? [unusedTexels(gpu), undefined, ...masks.bindings(outChunk)] : [];
    dispatch(
      [bind(values, c), undefined, undefined, outChunk, kLimit, ...extra],
      c.count,
      uniforms,
    );
  }
  return out;
}

interface RowSelection {
  kernel: Kernel;
  out: Tensor;
  rowsPerWorkgroup: number;
}

function radixKernel(
  values: Tensor,
  k: number,
  options: SelectOptions,
  staged: boolean,
): RowSelection {
  const gpu = values.gpu;
  const prefilter = k <= PREFILTER_MAX_K && values.cols >= PREFILTER_MIN_LEN;
  const constants = {
    STAGED: staged ? 1 : 0,
    K_FROM_BUFFER: options.kLimit ? 1 : 0,
    RELU_OUTPUT: options.raw ? 0 : 1,
    PREFILTER: prefilter ? 1 : 0,
    CHUNKS: prefilterChunks(k),
    MASKS: options.masks ? 1 : 0,
  };
  return {
    kernel: gpu.kernel("topk_select", wgsl("topk_select"), "select_rows", constants),
    // Rows whose candidates fit workgroup memory write only the kept values into zeros.
    out: prefilter ? gpu.zeros(values.shape) : gpu.empty(values.shape),
    rowsPerWorkgroup: 1,
  };
}

function scanKernel(values: Tensor, k: number, options: SelectOptions): RowSelection {
  const gpu = values.gpu;
  const length = SCAN_LENGTHS.find((n) => n >= k);
  if (length === undefined) {
    throw new GpuError(`top-k scan: k=${k} exceeds ${SCAN_LENGTHS[SCAN_LENGTHS.length - 1]}`);
  }
  const constants = { K_FROM_BUFFER: options.kLimit ? 1 : 0, RELU_OUTPUT: options.raw ? 0 : 1 };
  const code = wgsl("topk_scan", { SCAN_K: length });
  return {
    kernel: gpu.kernel(`topk_scan_${length}`, code, "select_rows_scan", constants),
    // Only the kept values are written.
    out: gpu.zeros(values.shape),
    rowsPerWorkgroup: SCAN_ROWS_PER_WORKGROUP,
  };
}

/**
 * The `count` largest values of the whole tensor: radix passes over element chunks with a global
 * histogram (the chunks just add into it), then the apply pass. With a slice-maxima bound the
 * first pass also collects the values above it, and the later passes and the apply run over
 * those (`Candidates`) unless they overflow.
 */
function selectBatch(values: Tensor, count: number, masks?: NonzeroBits): Tensor {
  const gpu = values.gpu;
  checkK(count, values.size);
  clearMasks(gpu, masks);
  if (count === 0) return gpu.zeros(values.shape);
  const maskInfo = maskBindings(values, masks);
  const elementChunks = chunks(gpu, values.size);
  // Every pass reads the values: stage them whole, once, where they fit one binding.
  const texels = elementChunks.length === 1 ? wholeTexels(values, "topk batch") : null;
  const bound = texels ? sliceMaximaBound(values, count, texels) : null;
  const candidates = bound ? new Candidates(values, count) : null;
  const state = batchState(values, count, { texels, bound, ties: true, candidates });
  // The candidate apply writes only the kept values.
  const out = candidates ? gpu.zeros(values.shape) : gpu.empty(values.shape);
  const constants = { RELU_OUTPUT: 1, STAGED: texels ? 1 : 0, MASKS: masks ? 1 : 0 };
  // The candidate apply reads the candidates instead of the values.
  const applyOn = (
    c: Chunk,
    entry: string,
    grid: readonly [number, number] | Tensor,
    lists: Tensor[] = [],
  ) =>
    gpu.dispatch(
      gpu.kernel("topk_select", wgsl("topk_select"), entry, constants),
      [
        entry === "apply" ? bind(values, c) : undefined,
        undefined,
        state,
        bind(out, c),
        undefined,
        entry === "apply" ? texels ?? unusedTexels(gpu) : undefined,
        undefined,
        ...maskInfo.bindings(bind(out, c)),
        ...lists,
      ],
      grid,
      selectParams({
        segments: 1,
        segLen: c.count,
        k: count,
        offset: c.shift,
        index0: c.first,
        capacity: candidates?.capacity,
        ...maskInfo.fields,
      }),
    );
  for (const c of elementChunks) {
    // A quad per invocation.
    applyOn(c, "apply", candidates?.applyArgs ?? grid1d(Math.ceil(c.count / 4)));
  }
  if (candidates) {
    applyOn(elementChunks[0], "apply_candidates", candidates.args, candidates.lists);
  }
  candidates?.dispose();
  bound?.dispose();
  state.dispose();
  return out;
}

/**
 * The values at or above a batch selection's bound, as (key, index) pairs, which its first value
 * pass appends (`COMPACT` in topk_select.wgsl), and the indirect arguments `candidate_dispatch`
 * sets from their count: the candidate passes when they fit, else the batch-wide ones. Room for
 * four times `count`: select_rows' prefilter, the same bound per row, leaves one to two times k.
 */
class Candidates {
  readonly capacity: number;
  readonly pairs: Tensor;
  readonly count: Tensor;
  /** The batch-wide histogram passes' and apply's grids, zeroed on the GPU when they fit. */
  readonly passArgs: Tensor;
  readonly applyArgs: Tensor;
  /** The candidate passes' grid. */
  readonly args: Tensor;

  constructor(values: Tensor, count: number) {
    const gpu = values.gpu;
    this.capacity = Math.min(values.size, 4 * count);
    this.pairs = gpu.empty([2 * this.capacity], "u32");
    this.count = gpu.empty([1], "u32");
    const grid = (x: number, y: number) => gpu.upload(Uint32Array.from([x, y, 1]), [3]);
    this.passArgs = grid(groups(values.size, ITEMS_PER_WORKGROUP), 1);
    this.applyArgs = grid(...grid1d(Math.ceil(values.size / 4)));
    this.args = gpu.empty([3], "u32");
  }

  /** Bindings 10 and 11 of topk_select.wgsl: the pairs and their count. */
  get lists(): Tensor[] {
    return [this.pairs, this.count];
  }

  /** Bindings 10-14 as `candidate_dispatch` reads and writes them. */
  get dispatchBindings(): (Tensor | undefined)[] {
    return [undefined, this.count, this.passArgs, this.applyArgs, this.args];
  }

  dispose(): void {
    for (const t of [this.pairs, this.count, this.passArgs, this.applyArgs, this.args]) t.dispose();
  }
}

/**
 * The selection state (`state` in topk_select.wgsl) of the batch's `count`-th largest value:
 * its key, then (with `ties`) the index prefix that keeps the lowest-indexed equal values.
 * `texels`: the values staged whole; `bound`: a lower bound's state (`sliceMaximaBound`);
 * `candidates`: where the first pass collects the values above the bound.
 */
function batchState(
  values: Tensor,
  count: number,
  { texels, bound, ties, candidates }: {
    texels: GPUTextureView | null;
    bound: Tensor | null;
    ties: boolean;
    candidates?: Candidates | null;
  },
): Tensor {
  const gpu = values.gpu;
  const code = wgsl("topk_select");
  const hist = gpu.empty([256], "u32");
  const state = gpu.empty([6], "u32");
  const compact = candidates ? 1 : 0;
  const constants = { STAGED: texels ? 1 : 0, HAS_BOUND: bound ? 1 : 0, COMPACT: compact };
  // Without candidates the (unwritten) candidate lists take a placeholder of their own: a buffer
  // bound writable may not also be bound read-only, as gpu.unusedBinding is here.
  const placeholder = candidates ? null : gpu.empty([2], "u32");
  const lists = candidates?.lists ?? [placeholder!, placeholder!];
  const uniforms = (fields: Partial<SelectFields>) =>
    selectParams({
      segments: 1,
      segLen: values.size,
      k: count,
      capacity: candidates?.capacity,
      ...fields,
    });
  gpu.dispatch(
    gpu.kernel("topk_select", code, "init", { COMPACT: compact }),
    [undefined, hist, state, undefined, gpu.unusedBinding, ...Array(5), lists[1]],
    [1],
    uniforms({}),
  );
  // Passes 0-3 find the k-th value; 4-7 break ties with it by index (no work without ties).
  for (let pass = 0; pass < (ties ? 8 : 4); pass++) {
    for (const c of chunks(gpu, values.size)) {
      gpu.dispatch(
        gpu.kernel("topk_select", code, "histogram", constants),
        [
          bind(values, c),
          hist,
          state,
          undefined,
          undefined,
          texels ?? unusedTexels(gpu),
          bound ?? gpu.unusedBinding,
          undefined,
          undefined,
          ...lists,
        ],
        pass > 0 && candidates ? candidates.passArgs : [groups(c.count, ITEMS_PER_WORKGROUP), 1],
        uniforms({ segLen: c.count, pass, offset: c.shift, index0: c.first }),
      );
    }
    if (pass > 0 && candidates) {
      gpu.dispatch(
        gpu.kernel("topk_select", code, "histogram_candidates", constants),
        [undefined, hist, state, ...Array(3), bound ?? undefined, ...Array(2), ...lists],
        candidates.args,
        uniforms({ pass }),
      );
    }
    gpu.dispatch(
      gpu.kernel("topk_select", code, "choose"),
      [undefined, hist, state],
      [1],
      uniforms({ pass }),
    );
    if (pass === 0 && candidates) {
      gpu.dispatch(
        gpu.kernel("topk_select", code, "candidate_dispatch", constants),
        [...Array(9), ...candidates.dispatchBindings],
        [1],
        uniforms({}),
      );
    }
  }
  hist.dispose();
  placeholder?.dispose();
  return state;
}

/**
 * The state of the `count`-th largest of the maxima of at least 2·count slices of the staged
 * `values` (null when they are fewer than 8·count): a lower bound for the batch's `count`-th
 * value, so the full passes count only the few values above it. Each value they skip would cost
 * a workgroup atomic (a scalar loop over SIMD lanes on llvmpipe); BatchTopK at the reference
 * shape: histogram 240 -> 141 ms.
 */
function sliceMaximaBound(values: Tensor, count: number, texels: GPUTextureView): Tensor | null {
  const gpu = values.gpu;
  const sliceLen = 4 * Math.floor(values.size / (2 * count) / 4);
  if (sliceLen < 4) return null;
  const maxima = gpu.empty([Math.ceil(values.size / sliceLen)]);
  gpu.dispatch(
    gpu.kernel("topk_select", wgsl("topk_select"), "slice_maxima", { STAGED: 1 }),
    [values, undefined, undefined, maxima, undefined, texels],
    grid1d(maxima.size),
    selectParams({ segments: 1, segLen: values.size, k: count, sliceLen }),
  );
  const maximaTexels = wholeTexels(maxima, "topk maxima");
  const bound = batchState(maxima, count, { texels: maximaTexels, bound: null, ties: false });
  maxima.dispose();
  return bound;
}

/**
 * ReLU of each row's k largest values; zeros elsewhere (SAELens TopK: top-k, then ReLU).
 * `method` overrides the per-row method (both give the same result). `masks` are filled with
 * the result's nonzeros, for `compressSelection`.
 */
export function topkPerRow(
  hiddenPre: Tensor,
  k: number,
  method?: RowSelectMethod,
  masks?: NonzeroBits,
): Tensor {
  return selectRows(hiddenPre, k, { method, masks });
}

/**
 * Each row's k largest values among the entries where `mask` > 0, unrectified, with k capped by
 * `kLimit` (TopK's auxiliary loss over dead latents). With a gate, only when it opens.
 */
export function topkPerRowMasked(
  values: Tensor,
  mask: Tensor,
  k: number,
  kLimit: Tensor,
  gate?: Gate,
  method?: RowSelectMethod,
): Tensor {
  const candidates = binary("maskGreaterOrNegInf", values, mask, "perCol", { alpha: 0, gate });
  const out = selectRows(candidates, k, { raw: true, kLimit, gate, method });
  candidates.dispose();
  return out;
}

/** Each row's k largest values, unrectified, with k capped by `kLimit`. */
export function topkPerRowRaw(
  values: Tensor,
  k: number,
  kLimit: Tensor,
  method?: RowSelectMethod,
): Tensor {
  return selectRows(values, k, { raw: true, kLimit, method });
}

/**
 * The `count` largest values of the whole tensor (ReLU'd), zeros elsewhere (BatchTopK). `masks`
 * are filled with the result's nonzeros, as [rows, cols], for `compressSelection`.
 */
export function topkOverBatch(values: Tensor, count: number, masks?: NonzeroBits): Tensor {
  return selectBatch(values, count, masks);
}
