/** Elementwise kernels (`kernels/binary.wgsl`, `kernels/unary.wgsl`) with broadcasting. */
import { bind, chunks } from "../gpu/chunks.ts";
import { type Binding, GpuError } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { type Gate, gatedIf } from "./gate.ts";
import { params, QUOTIENT_LIMIT, wgsl } from "./source.ts";
import { flatRuns, flatTexels, runRange } from "./staging.ts";

const BINARY_OPS = {
  add: 0,
  sub: 1,
  mul: 2,
  div: 3,
  /** alpha·a + beta·b */
  axpby: 4,
  /** a where b > alpha, else 0 */
  maskGreater: 5,
  /** alpha·a·b */
  mulScaled: 6,
  /** (a - b)² */
  squaredDiff: 7,
  /** alpha·(a - b) */
  scaledDiff: 8,
  /** a where b > alpha, else -inf */
  maskGreaterOrNegInf: 9,
  /** max(a, 0) where b > alpha, else 0 (Gated's 1[π > 0]·relu(h) in one pass) */
  reluMaskGreater: 10,
} as const;
export type BinaryOp = keyof typeof BINARY_OPS;

const UNARY_OPS = {
  relu: 0,
  /** 1 where a > alpha, else 0 */
  greater: 1,
  abs: 2,
  square: 3,
  sqrt: 4,
  exp: 5,
  /** alpha·a + beta */
  affine: 6,
  sign: 7,
  reciprocal: 8,
  log: 9,
  /** min(alpha·a, beta) */
  scaledMin: 10,
} as const;
export type UnaryOp = keyof typeof UNARY_OPS;

/** How `b` lines up with `a`: same shape, one value per column, one per row, or one scalar. */
export type Broadcast = "full" | "perCol" | "perRow" | "scalar";
const BROADCAST: Record<Broadcast, number> = { full: 0, perCol: 1, perRow: 2, scalar: 3 };

/** Workgroup grid for `n` items at 256 per group, folded into 2-D past the per-dimension cap. */
export function grid1d(n: number): [number, number] {
  const groups = Math.ceil(n / 256);
  const x = Math.min(groups, 65535);
  return [Math.max(1, x), Math.max(1, Math.ceil(groups / x))];
}

function expectedBSize(a: Tensor, bcast: Broadcast): number {
  return bcast === "full" ? a.size : bcast === "perCol" ? a.cols : bcast === "perRow" ? a.rows : 1;
}

export interface ElementwiseOptions {
  alpha?: number;
  beta?: number;
  /** Write into this tensor (may be `a` itself: each element is read before it is written). */
  out?: Tensor;
}

export interface BinaryOptions extends ElementwiseOptions {
  /** Run only when the gate opens (the output is left unwritten otherwise). */
  gate?: Gate;
  /** Add the result into `out` (out += op(a, b)) instead of overwriting it. */
  accumulate?: boolean;
}

/** out = op(a, b) elementwise, `b` broadcast as `bcast` says. */
export function binary(
  op: BinaryOp,
  a: Tensor,
  b: Tensor,
  bcast: Broadcast = "full",
  options: BinaryOptions = {},
): Tensor {
  if (b.size !== expectedBSize(a, bcast)) {
    throw new GpuError(
      `binary ${op}: b has ${b.size} values, ${bcast} broadcast over [${a.shape}] needs ${
        expectedBSize(a, bcast)
      }`,
    );
  }
  const gpu = a.gpu;
  const out = options.out ?? gpu.empty(a.shape);
  const inPlace = out.buffer === a.buffer;
  if (options.accumulate && (!options.out || inPlace)) {
    throw new GpuError(`binary ${op}: accumulate needs an out tensor other than a`);
  }
  // Four elements per invocation from staging textures when every group of four shares its row.
  // Row and column broadcasts find b's index with `quotient` (kernels/quotient.wgsl). Not behind
  // a gate: the staging copies would run whether it opens or not (AuxK's overflow, mostly shut).
  const vec4 = !options.gate && a.size % 4 === 0 &&
    (bcast === "full" || bcast === "scalar" || (a.cols % 4 === 0 && a.rows < QUOTIENT_LIMIT));
  const constants = { OP: BINARY_OPS[op], BCAST: BROADCAST[bcast] };
  const alphaBeta = [options.alpha ?? 1, options.beta ?? 1];
  if (vec4) {
    const entry = options.accumulate ? "staged_accumulate4" : "staged4";
    const kernel = gpu.kernel("binary", wgsl("binary"), entry, constants);
    // b is read from a staging texture when it is read by element or by column (whole texels),
    // else from its buffer; the layout declares both either way.
    const bColumns = bcast === "perCol"
      ? flatTexels(b, { start: 0, count: b.size }, "flat1")
      : null;
    for (const run of flatRuns(gpu, a.size)) {
      const aStaged = flatTexels(a, run, "flat0");
      const bStaged = bcast === "full" ? flatTexels(b, run, "flat1") : bColumns ?? aStaged;
      const bindings: (Binding | undefined)[] = [
        undefined,
        bcast === "full" ? runRange(b, run) : b,
        runRange(out, run),
        aStaged,
        bStaged,
      ];
      if (options.accumulate) bindings.push(flatTexels(out, run, "flat2"));
      const uniforms = params([run.count, a.cols, run.start], alphaBeta);
      gpu.dispatch(kernel, bindings, gatedIf(options.gate, grid1d(run.count / 4)), uniforms);
    }
    return out;
  }
  const mode = options.accumulate ? "accumulate" : inPlace ? "in_place" : "main";
  const kernel = gpu.kernel("binary", wgsl("binary"), mode, constants);
  // Tensors over one binding go in aligned chunks; `b` is chunked with them only when full-size.
  for (const c of chunks(gpu, a.size, 1, { multiple: 4, aligned: true })) {
    const bb = bcast === "full" ? bind(b, c) : b;
    const uniforms = params([c.count, a.cols, c.first], alphaBeta);
    const bindings = inPlace ? [bind(a, c), bb] : [bind(a, c), bb, bind(out, c)];
    gpu.dispatch(kernel, bindings, gatedIf(options.gate, grid1d(c.count)), uniforms);
  }
  return out;
}

/** out = op(a) elementwise. */
export function unary(op: UnaryOp, a: Tensor, options: ElementwiseOptions = {}): Tensor {
  const gpu = a.gpu;
  const out = options.out ?? gpu.empty(a.shape);
  const inPlace = out.buffer === a.buffer;
  const constants = { OP: UNARY_OPS[op] };
  const alphaBeta = [options.alpha ?? 0, options.beta ?? 0];
  if (a.size % 4 === 0) {
    const kernel = gpu.kernel("unary", wgsl("unary"), "staged4", constants);
    for (const run of flatRuns(gpu, a.size)) {
      const bindings = [runRange(out, run), flatTexels(a, run, "flat0")];
      const uniforms = params([run.count], alphaBeta);
      gpu.dispatch(kernel, [undefined, ...bindings], grid1d(run.count / 4), uniforms);
    }
    return out;
  }
  const kernel = gpu.kernel("unary", wgsl("unary"), inPlace ? "in_place" : "main", constants);
  for (const c of chunks(gpu, a.size, 1, { multiple: 4, aligned: true })) {
    const uniforms = params([c.count], alphaBeta);
    const bindings = inPlace ? [bind(a, c)] : [bind(a, c), bind(out, c)];
    gpu.dispatch(kernel, bindings, grid1d(c.count), uniforms);
  }
  return out;
}
