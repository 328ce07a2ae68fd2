/**
 * GEMM in the three layouts a training step needs: X·W, Xᵀ·G and G·Wᵀ.
 *
 * Large products take the tiled path: op(A) and op(B) are packed into rgba32float textures
 * (resolving transposes and padding), then a register-blocked kernel reads them. Small or thin
 * products use a simple storage-buffer kernel. Operands larger than one storage binding are bound
 * in windows, and products larger than a texture side are split into blocks.
 */
import { type Gpu, GpuError } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { binary } from "./elementwise.ts";
import { groups, params, wgsl } from "./source.ts";
import { fillNonzeroBits, type NonzeroBits } from "./sparse.ts";
import { packBlock, record } from "./texture_pack.ts";
import { alignDown, BINDING_ALIGN_BYTES, packedTexture } from "./textures.ts";

export interface MatmulOptions {
  /** A is stored [K, M] and used transposed. */
  transA?: boolean;
  /** B is stored [N, K] and used transposed. */
  transB?: boolean;
  /** Scale applied to the product. */
  alpha?: number;
  /** Add the product into this tensor instead of allocating a new one. */
  accumulateInto?: Tensor;
  /** Write the product into this tensor (overwriting it). */
  out?: Tensor;
  /** [N] added to every row of the product (the encoder bias); not with accumulateInto. */
  bias?: Tensor;
  /**
   * Also fill these masks of the result's positive entries (a ReLU's nonzeros, for
   * `compressSelection`): written by the tiled kernel as it stores, else by a pass over C.
   */
  positiveMasks?: NonzeroBits;
  /**
   * A promise that op(A)'s rows (`dim` "rows"), op(B)'s columns ("cols") or both operands' depth
   * ("depth") past the u32 count[at] are zero, so the tiled kernel may skip the products they
   * would add: the same result, less work where a GPU-side count (AuxK's dead latents) leaves
   * part of a fixed-size operand empty.
   */
  live?: LiveCount;
}

/** Where a product's operands stop being nonzero along one dimension (`MatmulOptions.live`). */
export interface LiveCount {
  count: Tensor;
  at: number;
  dim: "rows" | "cols" | "depth";
}

const LIVE_DIMS = { rows: 1, cols: 2, depth: 3 } as const;

/** Knobs for tests and benchmarks; training code never sets them. */
export interface MatmulInternals {
  /** Force a kernel instead of choosing by shape. */
  path?: "simple" | "tiled";
  /** Pretend storage bindings hold at most this many bytes (exercises windowed binding). */
  maxBindingBytes?: number;
  /** Pretend textures hold at most this many texels per side (exercises block splitting). */
  maxTextureSide?: number;
}

/** C = alpha · op(A) · op(B) (+ C). A and B are row-major matrices. */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  return matmulWith(a, b, options, {});
}

/** `matmul` with internal knobs exposed (tests and benchmarks only). */
export function matmulWith(
  a: Tensor,
  b: Tensor,
  options: MatmulOptions,
  internals: MatmulInternals,
): Tensor {
  const { transA = false, transB = false, alpha = 1 } = options;
  const [M, K] = transA ? [a.cols, a.rows] : [a.rows, a.cols];
  const [Kb, N] = transB ? [b.cols, b.rows] : [b.rows, b.cols];
  if (K !== Kb) {
    throw new GpuError(
      `matmul: inner dimensions differ (${K} vs ${Kb}) for [${a.shape}]${
        transA ? "ᵀ" : ""
      }·[${b.shape}]${transB ? "ᵀ" : ""}`,
    );
  }
  const gpu = a.gpu;
  const target = options.accumulateInto ?? options.out;
  if (target && target.size !== M * N) {
    throw new GpuError(`matmul: output holds ${target.size}, need ${M}x${N}`);
  }
  if (options.bias && (options.accumulateInto || options.bias.size !== N)) {
    throw new GpuError(`matmul: a bias needs ${N} values and no accumulateInto`);
  }
  const c = target ?? gpu.empty([M, N]);
  const accumulate = options.accumulateInto !== undefined;
  const maxBinding = internals.maxBindingBytes ?? gpu.limits.maxStorageBufferBindingSize;
  const path = internals.path ?? (useTiled(M, N, K) ? "tiled" : "simple");
  const fitsOneBinding = Math.max(a.size, b.size, c.size) * 4 <= maxBinding;
  if (path === "simple" && fitsOneBinding) {
    const kernel = gpu.kernel("matmul", wgsl("matmul"), "simple", {
      TRANS_A: transA ? 1 : 0,
      TRANS_B: transB ? 1 : 0,
      ACCUMULATE: accumulate ? 1 : 0,
    });
    const workgroups = [groups(N, 32), groups(M, 32)] as const;
    gpu.dispatch(kernel, [a, b, c], workgroups, params([M, N, K], [alpha]));
    if (options.bias) binary("add", c, options.bias, "perCol", { out: c });
    if (options.positiveMasks) fillNonzeroBits(c, options.positiveMasks, { positive: true });
  } else {
    const product = {
      a,
      b,
      c,
      M,
      N,
      K,
      transA,
      transB,
      alpha,
      accumulate,
      bias: options.bias,
      masks: options.positiveMasks,
      live: options.live,
    };
    tiledMatmul(gpu, product, {
      maxBinding,
      maxTextureSide: internals.maxTextureSide ?? gpu.limits.maxTextureDimension2D,
    });
  }
  return c;
}

/**
 * The tiled kernel computes 256x256 blocks of C, so it only pays off when both sides fill a good
 * part of a block (a matrix-vector product would waste almost all of it) and the product repays
 * packing. Measured on llvmpipe: tiled wins 1.3-3.5x from M·N·K ≈ 2^23 with M, N ≥ 64 (e.g.
 * 256x1024x128: 7.7 vs 25.9 ms) and loses below ~2^18. Its first compile takes 10-40 s on a
 * machine (Mesa's shader cache keeps it), which small test shapes avoid.
 */
function useTiled(M: number, N: number, K: number): boolean {
  return M >= 64 && N >= 64 && M * N * K >= 2 ** 22;
}

/** Rows and columns of C one tiled workgroup covers (8x8 invocations, 32x32 outputs each). */
const TILE = 256;

interface Product {
  a: Tensor;
  b: Tensor;
  c: Tensor;
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
  alpha: number;
  accumulate: boolean;
  bias?: Tensor;
  masks?: NonzeroBits;
  live?: LiveCount;
}

/** Mask words cover 32 rows or columns: with masks, blocks of C start at multiples of this. */
const MASK_WORD = 32;

function alignDownTo(n: number, multiple: number): number {
  return Math.floor(n / multiple) * multiple;
}

/**
 * Splits C into blocks that fit a texture side and one C binding, and K into chunks that fit a
 * texture side; each (block, chunk) packs its slices of op(A) and op(B) and runs the tiled
 * kernel. K chunks after the first add into C.
 */
function tiledMatmul(
  gpu: Gpu,
  p: Product,
  limits: { maxBinding: number; maxTextureSide: number },
): void {
  // Room for `textureSide`'s padding (at most 2 texels).
  const side = limits.maxTextureSide - 2;
  // Bp has 4*ceil(k/4) texel rows; Ap has ceil(k/4) texel columns.
  const kChunk = Math.min(p.K, Math.floor(side / 4) * 4);
  // Mask words must not straddle blocks; column blocks of whole tiles store unguarded.
  const align = p.masks ? MASK_WORD : 1;
  const nBlock = Math.min(p.N, alignDownTo(4 * side, 4 * side >= TILE ? TILE : align));
  // A C block of m rows spans (m-1)*N + nBlock elements after its aligned start.
  const rowsPerBinding = Math.floor(
    (limits.maxBinding - BINDING_ALIGN_BYTES - 4 * nBlock) / (4 * p.N),
  ) + 1;
  let mBlock = Math.min(p.M, side, rowsPerBinding);
  if (mBlock < 1) throw new GpuError(`matmul: one row of C (${p.N} values) exceeds a binding`);
  if (mBlock < p.M) {
    // Equal blocks, whole tiles where possible, so no block is a thin remainder.
    const blocks = Math.ceil(p.M / mBlock);
    const even = Math.ceil(Math.ceil(p.M / blocks) / TILE) * TILE;
    mBlock = even <= mBlock ? even : alignDownTo(mBlock, align);
    if (mBlock < 1) throw new GpuError(`matmul: ${align} rows of C exceed a binding`);
  }
  // Blocks of whole tiles store without bounds checks (WHOLE_TILES in matmul.wgsl), with
  // accumulation compiled in; partial blocks take the guarded variant, whose accumulation is a
  // uniform because each variant of it is another long compile.
  const tiledFor = (mc: number, nc: number, accumulate: boolean) =>
    mc % TILE === 0 && nc % TILE === 0
      ? gpu.kernel("matmul", wgsl("matmul"), "tiled", {
        WHOLE_TILES: 1,
        ACCUMULATE: accumulate ? 1 : 0,
      })
      : gpu.kernel("matmul", wgsl("matmul"), "tiled");
  for (let k0 = 0; k0 < p.K; k0 += kChunk) {
    const kc = Math.min(kChunk, p.K - k0);
    const accumulate = p.accumulate || k0 > 0;
    // The bias goes in after the last K chunk has accumulated, as a separate add would.
    const withLastK = k0 + kc >= p.K;
    const withBias = p.bias !== undefined && withLastK;
    for (let m0 = 0; m0 < p.M; m0 += mBlock) {
      const mc = Math.min(mBlock, p.M - m0);
      const aTexture = packedTexture(gpu, "matmul A", Math.ceil(kc / 4), mc);
      packBlock(gpu, p.a, p.transA, aTexture, [m0, k0], [mc, kc], mc, limits.maxBinding);
      for (let n0 = 0; n0 < p.N; n0 += nBlock) {
        const nc = Math.min(nBlock, p.N - n0);
        const kPadded = 4 * Math.ceil(kc / 4);
        const bTexture = packedTexture(gpu, "matmul B", Math.ceil(nc / 4), kPadded);
        packBlock(
          gpu,
          p.b,
          p.transB,
          bTexture,
          [k0, n0],
          [kc, nc],
          kPadded,
          limits.maxBinding,
        );
        const first = m0 * p.N + n0;
        const base = alignDown(first);
        const end = (m0 + mc - 1) * p.N + n0 + nc;
        const cWindow = { buffer: p.c.buffer, offset: 4 * base, size: 4 * (end - base) };
        // Without masks their bindings go unwritten: C's window (writable already) stands in.
        const masks = p.masks
          ? [{ buffer: p.masks.rowBits.buffer }, { buffer: p.masks.colBits.buffer }]
          : [cWindow, cWindow];
        record(
          gpu,
          tiledFor(mc, nc, accumulate),
          [
            { binding: 1, resource: aTexture.createView() },
            { binding: 2, resource: bTexture.createView() },
            { binding: 3, resource: cWindow },
            { binding: 4, resource: { buffer: (p.bias ?? gpu.unusedBinding).buffer } },
            { binding: 5, resource: masks[0] },
            { binding: 6, resource: masks[1] },
            { binding: 7, resource: { buffer: (p.live?.count ?? gpu.unusedBinding).buffer } },
          ],
          [groups(nc, TILE), groups(mc, TILE)],
          params(
            [
              mc,
              nc,
              Math.ceil(kc / 4),
              p.N,
              first - base,
              accumulate ? 1 : 0,
              withBias ? 1 : 0,
              n0,
              // Masks describe the finished product: the last K chunk writes them.
              p.masks && withLastK ? 1 : 0,
              m0,
              Math.ceil(p.N / MASK_WORD),
              Math.ceil(p.M / MASK_WORD),
              k0,
              p.live ? LIVE_DIMS[p.live.dim] : 0,
              p.live?.at ?? 0,
            ],
            [p.alpha],
          ),
        );
      }
    }
  }
}
