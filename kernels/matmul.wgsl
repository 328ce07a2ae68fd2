// C[M,N] = alpha * op(A) . op(B) (+ C when accumulating), row-major f32.
// op(A) is A[M,K], or A stored [K,M] when TRANS_A; op(B) is B[K,N], or B stored [N,K] when TRANS_B.
//
// Three entry points:
// - `simple`: 4x4 outputs per invocation straight from storage buffers; for small or thin shapes.
// - `pack`: copies a block of op(A) or op(B) into an rgba32float texture (4 consecutive columns per
//   texel), resolving the transpose and zero-padding the edges.
// - `tiled`: the fast path. Reads the two packed textures; each invocation keeps a ROWS x (4*COLS4)
//   block of C in registers. On Mesa's llvmpipe, storage-buffer loads inside a loop cost a scalar
//   loop over SIMD lanes each, while texel loads are gathered: textures are several times faster
//   (see PLATFORM.md). They are bound as read-only storage textures: 20-30% faster GEMMs here
//   than the same kernel reading sampled textures (texture_2d). Loops over constant ranges are
//   slow there too, so the register block is written out by `unrollWgsl` (src/kernels/source.ts):
//   a line ending in `// unroll i<ROWS j<COLS4` is repeated for every i and j (first variable
//   outermost) with `{i}` and `{j}` replaced.

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override ACCUMULATE: bool = false;

// ---- simple --------------------------------------------------------------------------------------

struct SimpleParams { M: u32, N: u32, K: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> sp: SimpleParams;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

const SIMPLE_TM = 4u;
const SIMPLE_TN = 4u;

fn load_a(m: u32, k: u32) -> f32 {
  if (TRANS_A) { return A[k * sp.M + m]; }
  return A[m * sp.K + k];
}
fn load_b(k: u32, n: u32) -> f32 {
  if (TRANS_B) { return B[n * sp.K + k]; }
  return B[k * sp.N + n];
}

@compute @workgroup_size(8, 8)
fn simple(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * SIMPLE_TM;
  let col0 = gid.x * SIMPLE_TN;
  if (row0 >= sp.M || col0 >= sp.N) { return; }
  var rows: array<u32, SIMPLE_TM>;
  var cols: array<u32, SIMPLE_TN>;
  for (var i = 0u; i < SIMPLE_TM; i++) { rows[i] = min(row0 + i, sp.M - 1u); }
  for (var j = 0u; j < SIMPLE_TN; j++) { cols[j] = min(col0 + j, sp.N - 1u); }
  var acc: array<array<f32, SIMPLE_TN>, SIMPLE_TM>;
  for (var k = 0u; k < sp.K; k++) {
    var a: array<f32, SIMPLE_TM>;
    var b: array<f32, SIMPLE_TN>;
    for (var i = 0u; i < SIMPLE_TM; i++) { a[i] = load_a(rows[i], k); }
    for (var j = 0u; j < SIMPLE_TN; j++) { b[j] = load_b(k, cols[j]); }
    for (var i = 0u; i < SIMPLE_TM; i++) {
      for (var j = 0u; j < SIMPLE_TN; j++) { acc[i][j] = acc[i][j] + a[i] * b[j]; }
    }
  }
  for (var i = 0u; i < SIMPLE_TM; i++) {
    for (var j = 0u; j < SIMPLE_TN; j++) {
      let r = row0 + i;
      let c = col0 + j;
      if (r < sp.M && c < sp.N) {
        var v = sp.alpha * acc[i][j];
        if (ACCUMULATE) { v = C[r * sp.N + c] + v; }
        C[r * sp.N + c] = v;
      }
    }
  }
}

// ---- pack ----------------------------------------------------------------------------------------

// Logical texel (x, y) gets L[row0 + y, col0 + 4x .. col0 + 4x + 3], where L = op(S) is the
// logical matrix and S the stored one (row length `stride`); entries outside the block
// (y >= rows or column >= cols) are zero. `src` is bound from element `base` of S, so one
// dispatch may see only a window of a matrix too large for one binding; it covers the logical
// texels from (x0, y0) to (width4, height).
struct PackParams {
  rows: u32, cols: u32, row0: u32, col0: u32,
  stride: u32, base: u32, x0: u32, y0: u32,
  width4: u32, height: u32, transposed: u32,
}
@group(0) @binding(0) var<uniform> pp: PackParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var packed: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(8, 8)
fn pack(@builtin(global_invocation_id) gid: vec3<u32>) {
  let texel = vec2<u32>(pp.x0 + gid.x, pp.y0 + gid.y);
  if (texel.x >= pp.width4 || texel.y >= pp.height) { return; }
  var value = vec4<f32>();
  if (texel.y < pp.rows) {
    let row = pp.row0 + texel.y;
    for (var c = 0u; c < 4u; c++) {
      let col = 4u * texel.x + c;
      if (col < pp.cols) {
        var index = row * pp.stride + pp.col0 + col;
        if (pp.transposed != 0u) { index = (pp.col0 + col) * pp.stride + row; }
        value[c] = src[index - pp.base];
      }
    }
  }
  textureStore(packed, texel, value);
}

// A transposed operand's texels gather 4 stored rows each, and llvmpipe runs every storage load as
// a loop over SIMD lanes (a [1024 x 1792] block: 15 ms). pack_transposed reads the stored rows
// from a flat staging texture instead (`flatTexels` in staging.ts: element `base` + 4t .. + 3 at
// texel (t % FLAT_WIDTH, t / FLAT_WIDTH)), which needs stored rows and the block's first logical
// row at multiples of 4: each invocation fills 4 texels of one texel column from 4 texel loads
// (logical rows y..y+3 of 4 logical columns) and a 4x4 transpose in registers. Same texels, zeros
// and windows as `pack`; the block starts at texel row 0.
override FLAT_WIDTH: u32 = 1u;
@group(0) @binding(3) var stored_texels: texture_storage_2d<rgba32float, read>;

@compute @workgroup_size(8, 8)
fn pack_transposed(@builtin(global_invocation_id) gid: vec3<u32>) {
  let x = pp.x0 + gid.x;
  let y = 4u * gid.y;
  if (x >= pp.width4 || y >= pp.height) { return; }
  let live_rows = vec4<u32>(y) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(pp.rows);
  // Logical column 4x + c of the 4 rows (zero past the block).
  var column_{c} = vec4<f32>();  // unroll c<4
  let texel_{c} = ((pp.col0 + 4u * x + {c}u) * pp.stride + pp.row0 + y - pp.base) / 4u;  // unroll c<4
  if (4u * x + {c}u < pp.cols && y < pp.rows) { column_{c} = select(vec4<f32>(), textureLoad(stored_texels, vec2<u32>(texel_{c} % FLAT_WIDTH, texel_{c} / FLAT_WIDTH)), live_rows); }  // unroll c<4
  let rows = transpose(mat4x4<f32>(column_0, column_1, column_2, column_3));
  if (y + {r}u < pp.height) { textureStore(packed, vec2<u32>(x, y + {r}u), rows[{r}u]); }  // unroll r<4
}

// ---- tiled ---------------------------------------------------------------------------------------

// Ap holds op(A) as [M, K/4] texels, Bp holds op(B) as [K, N/4] texels, both zero beyond K, so the
// inner loop needs no bounds checks. Cout is a window of C; output (m, n) of this block lives at
// c_offset + m * ldc + n of it.
// The block's output (m, n) is (row0 + m, col0 + n) of the whole product.
// With has_bias, bias[col0 + n] is added to output column n after the product (and after the
// accumulation), the same roundings as adding it in a separate pass: a bias epilogue for the
// encoder's x·W_enc + b_enc that saves a pass over [batch, d_sae].
// With has_masks, the bit masks of the positive outputs (as stored) go into row_masks and
// col_masks in the layout of compress_bits (kernels/sparse.wgsl), which then need not read the
// product again: bit b of row_masks[R * row_words + w] is output (R, 32w + b) > 0, bit b of
// col_masks[N' * col_words + w] is output (32w + b, N') > 0, for rows R and columns N' of the
// whole product. An invocation's
// 32 x 32 outputs are one whole word per row and per column (row0 and col0 are multiples of
// 32), so plain stores do; words past the product's edge are not written.
// With limit_dim 1, 2 or 3 (rows, columns or depth), the caller promises that op(A)'s rows, op(B)'s
// columns or both operands' depth past live[limit_at] (in indices of the whole product; the
// block's depth starts at k0) are zero: invocations skip the products they would add, which are
// zero anyway (AuxK's compacted dead latents, counted on the GPU: the slots past the count).
struct TiledParams {
  M: u32, N: u32, K4: u32, ldc: u32, c_offset: u32, accumulate: u32, has_bias: u32,
  col0: u32, has_masks: u32, row0: u32, row_words: u32, col_words: u32,
  k0: u32, limit_dim: u32, limit_at: u32, alpha: f32,
}
@group(0) @binding(0) var<uniform> tp: TiledParams;
@group(0) @binding(1) var Ap: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var Bp: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read_write> Cout: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_masks: array<u32>;
@group(0) @binding(6) var<storage, read_write> col_masks: array<u32>;
@group(0) @binding(7) var<storage, read> live: array<u32>;

const ROWS = 32u;  // rows of C per invocation
const COLS4 = 8u;  // vec4 column groups of C per invocation
const TILED_WORKGROUP = 8u;

// Set when the dispatch covers whole workgroup tiles (256 x 256 outputs) of the block: no
// invocation reaches past it, so outputs are stored without a bounds check, and accumulation is
// this ACCUMULATE constant, not the uniform. llvmpipe compiles each of the 1024 checks below into
// a branch of its own around a masked store: at K = 8 the guarded epilogue took 84 ms against
// 35 ms for plain stores (reference shape), and compiled in 64 s against 8. (One early return
// before a kernel's stores costs nothing measurable.)
override WHOLE_TILES: bool = false;

// One scalar store per output, returning what it stored (0 outside the block). Each storage access
// becomes a loop over SIMD lanes in llvmpipe, and the 1024 stores written out below are most of
// this kernel's compile time.
fn store(row: u32, col: u32, v: f32, b: f32) -> f32 {
  if (!WHOLE_TILES && (row >= tp.M || col >= tp.N)) { return 0.0; }
  let index = tp.c_offset + row * tp.ldc + col;
  var out = tp.alpha * v;
  // Whole tiles have accumulation compiled in; partial blocks read the uniform.
  if (select(tp.accumulate != 0u, ACCUMULATE, WHOLE_TILES)) { out = Cout[index] + out; }
  out = select(out, out + b, tp.has_bias != 0u);
  Cout[index] = out;
  return out;
}

// 1 where v > 0, per component.
fn positive(v: vec4<f32>) -> vec4<u32> {
  return select(vec4<u32>(), vec4<u32>(1u), v > vec4<f32>());
}

// bias for 4 output columns from `col` (zero past N or without a bias).
fn bias4(col: u32) -> vec4<f32> {
  var b = vec4<f32>();
  if (tp.has_bias != 0u) {
    for (var c = 0u; c < 4u; c++) {
      if (WHOLE_TILES || col + c < tp.N) { b[c] = bias[tp.col0 + col + c]; }
    }
  }
  return b;
}

@compute @workgroup_size(TILED_WORKGROUP, TILED_WORKGROUP)
fn tiled(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row_base = gid.y * ROWS;
  let col4_base = gid.x * COLS4;
  // Edge invocations read clamped rows and columns; their extra results are never stored.
  let last_col4 = (tp.N + 3u) / 4u - 1u;
  let row_{i} = min(row_base + {i}u, tp.M - 1u);  // unroll i<ROWS
  let col4_{j} = min(col4_base + {j}u, last_col4);  // unroll j<COLS4
  var acc_{i}_{j} = vec4<f32>();  // unroll i<ROWS j<COLS4
  // Depth steps the workgroup walks: all of them, or those below the live depth. Invocations past
  // the live rows or columns walk them too (the barrier below needs every invocation) but add
  // nothing.
  let live_count = live[tp.limit_at];
  var k4_end = tp.K4;
  if (tp.limit_dim == 3u) { k4_end = min(tp.K4, (max(live_count, tp.k0) - tp.k0 + 3u) / 4u); }
  let idle = (tp.limit_dim == 1u && tp.row0 + row_base >= live_count) ||
             (tp.limit_dim == 2u && tp.col0 + 4u * col4_base >= live_count);
  for (var k4 = 0u; k4 < k4_end; k4++) {
    // llvmpipe runs a workgroup's SIMD groups (8 invocations of one row here) one after another
    // unless a barrier makes it switch between them. Each group reads the same 256 columns of
    // op(B), K · 1 KiB, more than a core's L2 at K = 768; with a barrier every 128 depth steps the
    // groups take turns on each 128 KiB block while it is cached. Reference shape: 486-492 ->
    // 407-420 ms (every 64 steps 420-471, every 32 worse than none).
    if (k4 % 32u == 0u) { workgroupBarrier(); }
    if (!idle) {
      let k = 4u * k4;
      let b0_{j} = textureLoad(Bp, vec2<u32>(col4_{j}, k));  // unroll j<COLS4
      let b1_{j} = textureLoad(Bp, vec2<u32>(col4_{j}, k + 1u));  // unroll j<COLS4
      let b2_{j} = textureLoad(Bp, vec2<u32>(col4_{j}, k + 2u));  // unroll j<COLS4
      let b3_{j} = textureLoad(Bp, vec2<u32>(col4_{j}, k + 3u));  // unroll j<COLS4
      let a_{i} = textureLoad(Ap, vec2<u32>(k4, row_{i}));  // unroll i<ROWS
      // Written as one expression so k ascends within each accumulator, as in the f32 reference.
      acc_{i}_{j} = (((acc_{i}_{j} + a_{i}.x * b0_{j}) + a_{i}.y * b1_{j}) + a_{i}.z * b2_{j}) + a_{i}.w * b3_{j};  // unroll i<ROWS j<COLS4
    }
  }
  let col_{j} = 4u * (col4_base + {j}u);  // unroll j<COLS4
  let bias_{j} = bias4(col_{j});  // unroll j<COLS4
  let out_{i}_{j} = vec4<f32>(store(row_base + {i}u, col_{j}, acc_{i}_{j}.x, bias_{j}.x), store(row_base + {i}u, col_{j} + 1u, acc_{i}_{j}.y, bias_{j}.y), store(row_base + {i}u, col_{j} + 2u, acc_{i}_{j}.z, bias_{j}.z), store(row_base + {i}u, col_{j} + 3u, acc_{i}_{j}.w, bias_{j}.w));  // unroll i<ROWS j<COLS4
  if (tp.has_masks == 0u) { return; }
  // Row i's word: column 4j + c is bit 4j + c; column 4j + c's word: row i is bit i.
  var row_word_{i} = 0u;  // unroll i<ROWS
  var col_word_{j} = vec4<u32>();  // unroll j<COLS4
  row_word_{i} |= dot(positive(out_{i}_{j}), vec4<u32>(1u, 2u, 4u, 8u)) << (4u * {j}u);  // unroll i<ROWS j<COLS4
  col_word_{j} |= positive(out_{i}_{j}) << vec4<u32>({i}u);  // unroll i<ROWS j<COLS4
  // Invocations past the block's edge own no words (theirs would alias the next row's or column's).
  if (!WHOLE_TILES && (row_base >= tp.M || 4u * col4_base >= tp.N)) { return; }
  let global_row = tp.row0 + row_base;
  let global_col = tp.col0 + 4u * col4_base;
  if (WHOLE_TILES || row_base + {i}u < tp.M) { row_masks[(global_row + {i}u) * tp.row_words + global_col / 32u] = row_word_{i}; }  // unroll i<ROWS
  let col_at_{j} = (global_col + 4u * {j}u) * tp.col_words + global_row / 32u;  // unroll j<COLS4
  if (WHOLE_TILES || col_{j} < tp.N) { col_masks[col_at_{j}] = col_word_{j}.x; }  // unroll j<COLS4
  if (WHOLE_TILES || col_{j} + 1u < tp.N) { col_masks[col_at_{j} + tp.col_words] = col_word_{j}.y; }  // unroll j<COLS4
  if (WHOLE_TILES || col_{j} + 2u < tp.N) { col_masks[col_at_{j} + 2u * tp.col_words] = col_word_{j}.z; }  // unroll j<COLS4
  if (WHOLE_TILES || col_{j} + 3u < tp.N) { col_masks[col_at_{j} + 3u * tp.col_words] = col_word_{j}.w; }  // unroll j<COLS4
}
