/**
 * Sparse products of the TopK-family step (`kernels/sparse.wgsl`): a selection matrix with at
 * most `capacity` nonzeros is compressed into row lists (for decoding) and latent lists (for
 * gradients), so decoding and every gradient cost O(nonzeros · d_in) rather than dense GEMMs.
 */
import { type Binding, type Gpu, GpuError } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { binary, grid1d } from "./elementwise.ts";
import { type Gate, gatedIf } from "./gate.ts";
import { groups, params, wgsl } from "./source.ts";
import { wholeTexels } from "./staging.ts";
import { type StagedRows, tensorOf, texelRows } from "./texture_pack.ts";
import { packedTexture } from "./textures.ts";

/** Compressed lists over one axis of a [rows, d_sae] matrix. */
export interface SparseLists {
  /** [lists + 1] start of each list; the last holds the number of entries. */
  offsets: Tensor;
  /** [capacity] each entry's position inside its list (latent for rows, row for latents). */
  index: Tensor;
  /** [capacity] each entry's value. */
  value: Tensor;
  /** [capacity] the list each entry belongs to. */
  owner: Tensor;
}

/** A selection matrix as row lists and latent lists with the same entries. */
export interface SparseActs {
  rows: number;
  dSae: number;
  capacity: number;
  byRow: SparseLists;
  byLatent: SparseLists;
  /** The gate the lists were built under: they are empty unless it opened. */
  gate?: Gate;
}

/**
 * Bindings 1..25 of kernels/sparse.wgsl, by role (wDec, dPre, saeIn, entriesOut, entriesIn and
 * denseTexels are textures).
 */
const BINDINGS = [
  "dense",
  "counts",
  "offsets",
  "index",
  "value",
  "owner",
  "wDec",
  "norms",
  "out",
  "dPre",
  "entriesOut",
  "saeIn",
  "linearPre",
  "dWDec",
  "dWEnc",
  "dBEnc",
  "dNorms",
  "entriesIn",
  "extraGrad",
  "dispatchArgs",
  "denseOut",
  "rowBits",
  "colBits",
  "denseTexels",
  "foldScale",
];

/** The binding list of an entry point: `named` roles at their places, gaps elsewhere. */
function bindingsOf(named: Record<string, Binding>): (Binding | undefined)[] {
  return BINDINGS.map((name) => named[name]);
}

/** vec4 columns each decode / latent_backward invocation takes (SPAN, LATENT_SPAN in sparse.wgsl). */
const DECODE_SPAN = 8;
const LATENT_SPAN = 4;
/** Consecutive latents each latent_backward invocation takes (QUAD in sparse.wgsl). */
const LATENT_QUAD = 4;

/** Most decoder terms one backward call takes (matryoshka widths); uniform array of 2 vec4. */
export const MAX_TERMS = 8;

interface Fields {
  widths?: readonly number[];
  lists?: number;
  len?: number;
  dIn?: number;
  dSae?: number;
  rows?: number;
  capacity?: number;
}

function uniforms(f: Fields): ArrayBuffer {
  const widths = [...(f.widths ?? []), ...new Array(MAX_TERMS).fill(0)].slice(0, MAX_TERMS);
  return params([
    ...widths,
    f.lists ?? 0,
    f.len ?? 0,
    f.dIn ?? 0,
    f.dSae ?? 0,
    f.widths?.length ?? 0,
    f.rows ?? 0,
    f.capacity ?? 0,
  ]);
}

/**
 * Whether the sparse step fits the device (else use dense): every tensor it binds fits one
 * storage binding, and W_dec, the decoder-term gradients stacked by band (at most `terms`) and
 * the encoder input fit a texture (`texelRows`, up to 2 texels of padding per side).
 */
export function sparseFits(
  limits: { maxBindingBytes: number; maxTextureSide: number },
  { rows, dIn, dSae, terms }: { rows: number; dIn: number; dSae: number; terms: number },
): boolean {
  const side = limits.maxTextureSide - 2;
  return 4 * Math.max(rows * dSae, dIn * dSae) <= limits.maxBindingBytes && rows <= 65535 &&
    dIn % 4 === 0 && Math.max(dIn / 4, dSae, rows * terms) <= side;
}

/**
 * Bit masks of a [rows, d_sae] matrix's nonzeros by row and by latent (`compress_bits` in
 * kernels/sparse.wgsl has the layout): what the lists are built from.
 */
export interface NonzeroBits {
  /** [rows · ceil(d_sae / 32)] */
  rowBits: Tensor;
  /** [d_sae · ceil(rows / 32)] */
  colBits: Tensor;
}

/** Uninitialised masks for a [rows, dSae] matrix (for the tiled GEMM to fill). */
export function emptyNonzeroBits(gpu: Gpu, rows: number, dSae: number): NonzeroBits {
  return {
    rowBits: gpu.empty([rows * Math.ceil(dSae / 32)], "u32"),
    colBits: gpu.empty([dSae * Math.ceil(rows / 32)], "u32"),
  };
}

/** Lists over one axis from its bit masks: counts, their prefix sums, then the entries. */
function listsFromBits(
  dense: Tensor,
  bits: NonzeroBits,
  capacity: number,
  axis: "rows" | "latents",
  gate: Gate | undefined,
): SparseLists {
  const gpu = dense.gpu;
  const [rows, dSae] = dense.shape;
  const lists = axis === "rows" ? rows : dSae;
  const words = Math.ceil((axis === "rows" ? dSae : rows) / 32);
  const fields = uniforms({ lists, len: words, rows, dSae, capacity });
  const constants = { LATENT_LISTS: axis === "latents" ? 1 : 0 };
  const kernel = (entry: string) => gpu.kernel("sparse", wgsl("sparse"), entry, constants);
  const counts = gpu.empty([lists], "u32");
  const out: SparseLists = {
    // Gated: empty lists unless the gate opens.
    offsets: gate ? gpu.zeros([lists + 1], "u32") : gpu.empty([lists + 1], "u32"),
    index: gpu.empty([capacity], "u32"),
    value: gpu.empty([capacity]),
    owner: gpu.empty([capacity], "u32"),
  };
  const perList = gatedIf(gate, grid1d(lists * 4)); // 64 per workgroup, grid1d counts 256
  gpu.dispatch(kernel("compress_count"), bindingsOf({ counts, ...bits }), perList, fields);
  gpu.dispatch(
    kernel("compress_scan"),
    bindingsOf({ counts, offsets: out.offsets }),
    gatedIf(gate, [1]),
    fields,
  );
  gpu.dispatch(
    kernel("compress_fill"),
    bindingsOf({ dense, ...bits, ...out }),
    perList,
    fields,
  );
  counts.dispose();
  return out;
}

/**
 * Fills `bits` with the masks of a [rows, d_sae] matrix's nonzeros (`positive`: of its entries
 * above zero), from one read of it.
 */
export function fillNonzeroBits(
  dense: Tensor,
  bits: NonzeroBits,
  { gate, positive = false }: { gate?: Gate; positive?: boolean } = {},
): void {
  const gpu = dense.gpu;
  const [rows, dSae] = dense.shape;
  gpu.clear(bits.rowBits); // ORed into
  // Four latents per invocation from texels where the whole matrix stages as whole texels;
  // not behind a gate, which would leave the copy to run for nothing.
  const denseTexels = !gate && dSae % 4 === 0 ? wholeTexels(dense, "flat0") : null;
  const invocations = dSae * Math.ceil(rows / 32) / (denseTexels ? 4 : 1);
  gpu.dispatch(
    gpu.kernel(
      "sparse",
      wgsl("sparse"),
      denseTexels ? "compress_bits_staged" : "compress_bits",
      { POSITIVE: positive ? 1 : 0 },
    ),
    bindingsOf(denseTexels ? { denseTexels, ...bits } : { dense, ...bits }),
    gatedIf(gate, grid1d(Math.ceil(invocations / 64) * 256)), // grid1d counts 256 per workgroup
    uniforms({ rows, dSae }),
  );
}

/**
 * Row and latent lists of a [rows, d_sae] matrix's nonzeros. `capacity` must bound them (top-k
 * selection keeps exactly k per segment; by default every element may be nonzero); entries past
 * it would be dropped. With a gate the lists stay empty (and `dense` unread) unless it opens.
 * `bits`: the nonzeros' masks, already made (the encoder GEMM writes them); they are released.
 */
export function compressSelection(
  dense: Tensor,
  capacity = dense.size,
  gate?: Gate,
  bits?: NonzeroBits,
): SparseActs {
  const [rows, dSae] = dense.shape;
  const size = Math.max(1, capacity);
  return withNonzeroBits(dense, gate, bits, (bits) => ({
    rows,
    dSae,
    capacity: size,
    byRow: listsFromBits(dense, bits, size, "rows", gate),
    byLatent: listsFromBits(dense, bits, size, "latents", gate),
    gate,
  }));
}

/** Just the row lists of `compressSelection`, for callers that never walk latents. */
export function compressRows(dense: Tensor, capacity = dense.size): SparseLists {
  return withNonzeroBits(
    dense,
    undefined,
    undefined,
    (bits) => listsFromBits(dense, bits, Math.max(1, capacity), "rows", undefined),
  );
}

/**
 * `build` from the nonzero bit masks of `dense` (`given`, or made here), which are released after
 * it has recorded.
 */
function withNonzeroBits<T>(
  dense: Tensor,
  gate: Gate | undefined,
  given: NonzeroBits | undefined,
  build: (bits: NonzeroBits) => T,
): T {
  let bits = given;
  if (!bits) {
    bits = emptyNonzeroBits(dense.gpu, dense.rows, dense.cols);
    fillNonzeroBits(dense, bits, { gate });
  }
  const built = build(bits);
  bits.rowBits.dispose();
  bits.colBits.dispose();
  return built;
}

/** Column sums of the selection ([d_sae]) from its latent lists; equal to `reduceCols` bit for bit. */
export function latentSums(acts: SparseActs): Tensor {
  const gpu = acts.byLatent.offsets.gpu;
  const out = gpu.empty([acts.dSae]);
  const { offsets, value } = acts.byLatent;
  gpu.dispatch(
    gpu.kernel("sparse", wgsl("sparse"), "latent_sums"),
    bindingsOf({ offsets, value, denseOut: out }),
    grid1d(acts.dSae * 4), // 64 invocations per workgroup, grid1d counts 256
    uniforms({ dSae: acts.dSae, capacity: acts.capacity }),
  );
  return out;
}

/** acts · W_dec over the row lists ([rows, d_in], no bias), latents below `width` only. */
export function sparseDecode(
  acts: SparseActs,
  wDec: Tensor | StagedRows,
  options: { norms?: Tensor; width?: number } = {},
): Tensor {
  return sparseDecodePrefixes(acts, wDec, {
    norms: options.norms,
    widths: [options.width ?? acts.dSae],
  })[0];
}

/**
 * `sparseDecode` for several widths (Matryoshka's prefixes and the full width) in one walk over
 * the row lists: the same sums as separate decodes, bit for bit. Returns one [rows, d_in] tensor
 * per width, in the order given.
 */
export function sparseDecodePrefixes(
  acts: SparseActs,
  wDec: Tensor | StagedRows,
  { norms, widths }: { norms?: Tensor; widths: readonly number[] },
): Tensor[] {
  const { gpu, cols: dIn } = tensorOf(wDec);
  const bounds = bandBounds(widths);
  const out = gpu.empty([bounds.length * acts.rows, dIn]);
  const kernel = gpu.kernel("sparse", wgsl("sparse"), "decode", { RESCALE: norms ? 1 : 0 });
  const { offsets, index, value } = acts.byRow;
  gpu.dispatch(
    kernel,
    bindingsOf({
      offsets,
      index,
      value,
      wDec: texelRows(wDec, "sparse W_dec"),
      norms: norms ?? gpu.unusedBinding,
      out,
    }),
    [groups(Math.ceil(dIn / 4 / DECODE_SPAN), 64), acts.rows],
    uniforms({ widths: bounds, dIn, rows: acts.rows, capacity: acts.capacity }),
  );
  if (bounds.length === 1) return [out];
  const size = acts.rows * dIn;
  const blocks = bounds.map((_, band) => {
    const block = gpu.empty([acts.rows, dIn]);
    gpu.copy(out, block, band * size, 0, size);
    return block;
  });
  out.dispose();
  return widths.map((w) => blocks[bounds.indexOf(w)]);
}

/** What the latent-list backward reads. */
export interface SparseBackwardInputs {
  wDec: Tensor | StagedRows;
  /** The encoder input each row saw ([rows, d_in]). */
  saeIn: Tensor | StagedRows;
  /** Per decoder term, the [rows, d_in] gradient w.r.t. its output (before b_dec). */
  dPre: readonly Tensor[];
  /** Latents below widths[t] feed term t. */
  widths: readonly number[];
  /** Decoder row norms when activations were rescaled by them, else undefined. */
  norms?: Tensor;
  /** [rows, d_sae] pre-activations before any rescaling (read only when rescaling). */
  linearPre: Tensor;
  /**
   * Gradient w.r.t. the activations from other losses (L1), read at the entries: [rows, d_sae],
   * or [d_sae] when it depends on the latent only.
   */
  extraGrad?: Tensor;
  /** false: extraGrad already holds the whole gradient (no per-entry decoder dot). */
  dot?: boolean;
}

/** The distinct decoder-term widths, ascending: the upper bounds of the latent bands. */
function bandBounds(widths: readonly number[]): number[] {
  if (widths.length === 0 || widths.length > MAX_TERMS) {
    throw new GpuError(`sparse kernels: 1..${MAX_TERMS} decoder terms, got ${widths.length}`);
  }
  return [...new Set(widths)].sort((a, b) => a - b);
}

/**
 * The decoder-term gradients summed per band of latents, stacked [bands · rows, d_in]. Latents
 * below the same set of term widths see the same terms, so one block per distinct width
 * (ascending) replaces one per term, and the kernels read one block per entry. Each band adds its
 * terms in term order, as the kernels did term by term. One term is its own band.
 */
function bandGradients(
  dPre: readonly Tensor[],
  widths: readonly number[],
): { bands: Tensor; bounds: number[] } {
  const bounds = bandBounds(widths);
  if (dPre.length !== widths.length) {
    throw new GpuError(`sparse kernels: ${dPre.length} term gradients for ${widths.length} widths`);
  }
  if (dPre.length === 1) return { bands: dPre[0], bounds };
  const gpu = dPre[0].gpu;
  const [rows, cols] = dPre[0].shape;
  const size = rows * cols;
  const bands = gpu.empty([bounds.length * rows, cols]);
  bounds.forEach((bound, band) => {
    // Latents below `bound` (and not below the band before) lie below every width >= bound.
    const [first, ...rest] = dPre.filter((_, t) => widths[t] >= bound);
    if (rest.length === 0) {
      gpu.copy(first, bands, 0, band * size, size);
      return;
    }
    const sum = binary("add", first, rest[0]);
    for (const next of rest.slice(1)) binary("add", sum, next, "full", { out: sum });
    gpu.copy(sum, bands, 0, band * size, size);
    sum.dispose();
  });
  return { bands, bounds };
}

/** Where the latent-list backward adds its gradients (all zero-initialised by the caller). */
export interface SparseBackwardOutputs {
  dWDec: Tensor;
  dWEnc: Tensor;
  dBEnc: Tensor;
  /** dL/d‖W_dec[j]‖ ([d_sae]); untouched without rescaling. */
  dNorms: Tensor;
  /**
   * No gradient has reached dWDec and dWEnc yet: store every latent's row and column (zeros for
   * empty lists) instead of adding, which saves reading them back. Under a closed gate nothing is
   * stored, so they must still start zeroed.
   */
  overwrite?: boolean;
  /**
   * With `overwrite`: [d_sae] factors s_j, adding s_j · W_dec[j] to each row's gradient (the
   * decoder-norm gradient dn_j / ‖W_dec[j]‖, when nothing adds to dn after this call).
   */
  foldScale?: Tensor;
}

/** Adds the W_dec, W_enc, b_enc and decoder-norm gradients of the selected entries. */
export function sparseBackward(
  acts: SparseActs,
  inputs: SparseBackwardInputs,
  outputs: SparseBackwardOutputs,
): void {
  const { gpu, cols: dIn } = tensorOf(inputs.wDec);
  const { bands, bounds } = bandGradients(inputs.dPre, inputs.widths);
  const entriesWidth = gpu.flatWidth;
  const fields = {
    widths: bounds,
    dIn,
    dSae: acts.dSae,
    rows: acts.rows,
    capacity: acts.capacity,
  };
  const code = wgsl("sparse");
  const rescale = { RESCALE: inputs.norms ? 1 : 0 };
  // The norms are read only when rescaling.
  const norms = inputs.norms ?? gpu.unusedBinding;
  const { offsets, index, value, owner } = acts.byLatent;
  const entries = packedTexture(
    gpu,
    "sparse entries",
    entriesWidth,
    Math.ceil(acts.capacity / entriesWidth),
  ).createView();
  const dispatchArgs = gpu.empty([3], "u32");
  const all: Record<string, Binding> = {
    offsets,
    index,
    value,
    owner,
    wDec: texelRows(inputs.wDec, "sparse W_dec"),
    norms,
    dPre: texelRows(bands, "sparse dPre"),
    entriesOut: entries,
    saeIn: texelRows(inputs.saeIn, "sparse saeIn"),
    linearPre: inputs.linearPre,
    dWDec: outputs.dWDec,
    dWEnc: outputs.dWEnc,
    dBEnc: outputs.dBEnc,
    dNorms: outputs.dNorms,
    entriesIn: entries,
    // Read only with HAS_EXTRA.
    extraGrad: inputs.extraGrad ?? gpu.unusedBinding,
    // Read only with FOLD_NORMS.
    foldScale: outputs.foldScale ?? gpu.unusedBinding,
    dispatchArgs,
  };
  const bound = (names: string[]) => bindingsOf(Object.fromEntries(names.map((n) => [n, all[n]])));
  entryDispatch(acts, dispatchArgs);
  const extra = {
    HAS_EXTRA: inputs.extraGrad ? 1 : 0,
    EXTRA_PER_LATENT: inputs.extraGrad?.shape.length === 1 ? 1 : 0,
    DOT: inputs.dot === false ? 0 : 1,
  };
  gpu.dispatch(
    gpu.kernel("sparse", code, "entry_grads", { ...rescale, ...extra }),
    bound([
      "offsets",
      "index",
      "value",
      "owner",
      "wDec",
      "norms",
      "dPre",
      "entriesOut",
      "linearPre",
      "extraGrad",
    ]),
    dispatchArgs,
    uniforms(fields),
  );
  // Workgroups of 64 invocations per LATENT_QUAD latents, each invocation LATENT_SPAN vec4 columns.
  const slices = groups(Math.ceil(dIn / 4 / LATENT_SPAN), 64);
  if (outputs.foldScale && !outputs.overwrite) {
    throw new GpuError("sparseBackward: foldScale needs overwrite (it folds into the stored rows)");
  }
  gpu.dispatch(
    gpu.kernel("sparse", code, "latent_backward", {
      ...rescale,
      OVERWRITE: outputs.overwrite ? 1 : 0,
      FOLD_NORMS: outputs.foldScale ? 1 : 0,
    }),
    bound([
      "offsets",
      "wDec",
      "foldScale",
      "dPre",
      "saeIn",
      "dWDec",
      "dWEnc",
      "dBEnc",
      "dNorms",
      "entriesIn",
    ]),
    // Empty lists add nothing: skip the pass over every latent unless the gate opened.
    // grid1d counts 256 per workgroup
    gatedIf(acts.gate, grid1d(Math.ceil(acts.dSae / LATENT_QUAD) * slices * 64 * 4)),
    uniforms(fields),
  );
  dispatchArgs.dispose();
  if (inputs.dPre.length > 1) bands.dispose();
}

/** Indirect-dispatch arguments covering the latent lists' entries, 64 per workgroup. */
function entryDispatch(acts: SparseActs, dispatchArgs: Tensor): void {
  const gpu = dispatchArgs.gpu;
  // As many workgroups as there are entries (the capacity may be far larger): sized on the GPU.
  gpu.dispatch(
    gpu.kernel("sparse", wgsl("sparse"), "entry_dispatch"),
    bindingsOf({ offsets: acts.byLatent.offsets, dispatchArgs }),
    [1],
    uniforms({ lists: acts.dSae, capacity: acts.capacity }),
  );
}

/**
 * dL/df = Σ_t dot(dPre_t[b], W_dec[j]) over the terms t with j < widths[t], at each entry (b, j)
 * of `acts`, written into `out`
 * ([rows, d_sae], left as it is elsewhere).
 */
export function entryDotsDense(
  acts: SparseActs,
  inputs: Pick<SparseBackwardInputs, "wDec" | "dPre" | "widths">,
  out: Tensor,
): void {
  const gpu = out.gpu;
  const dispatchArgs = gpu.empty([3], "u32");
  entryDispatch(acts, dispatchArgs);
  const { offsets, index, owner } = acts.byLatent;
  const { bands, bounds } = bandGradients(inputs.dPre, inputs.widths);
  gpu.dispatch(
    gpu.kernel("sparse", wgsl("sparse"), "entry_dots_dense"),
    bindingsOf({
      offsets,
      index,
      owner,
      wDec: texelRows(inputs.wDec, "sparse W_dec"),
      dPre: texelRows(bands, "sparse dPre"),
      denseOut: out,
    }),
    dispatchArgs,
    uniforms({
      widths: bounds,
      dIn: tensorOf(inputs.wDec).cols,
      dSae: acts.dSae,
      rows: acts.rows,
      capacity: acts.capacity,
    }),
  );
  dispatchArgs.dispose();
  if (inputs.dPre.length > 1) bands.dispose();
}
