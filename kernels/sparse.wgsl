// Sparse training step of the TopK family: the selected activations of a [rows, d_sae] batch kept
// as compressed lists (by row for decoding, by latent for gradients), so that decoding and every
// gradient cost O(nonzeros · d_in) instead of a dense [rows, d_sae] x [d_sae, d_in] product.
//
// compress_bits / compress_count / compress_scan / compress_fill: the nonzeros of a dense
//   [rows, d_sae] matrix as row lists and latent lists, each in index order, from bit masks built
//   in one read of the matrix. `entry_index` holds each entry's position inside its list,
//   `entry_owner` the list it belongs to.
// decode: out[t, r] = sum over row r's entries with latent < widths[t] of
//   entry_value / norm · W_dec[latent].
// entry_grads: per latent-list entry (row b, latent j): dot(d_pre[band(j), b], W_dec[j]), the
//   gradient reaching the decoded activation.
// latent_backward: per latent j and d_in slice: the W_dec row, W_enc column, b_enc and decoder-norm
//   gradients from j's entries. Every sum runs in a fixed order, so results are deterministic.
// Bands (Matryoshka): latents below the same decoder-term widths receive the same sum of term
//   gradients, so d_pre holds one [rows, d_in] block per band (the host sums each band's terms),
//   and latent j reads band(j), the first band whose upper bound exceeds j.
struct Params {
  widths: array<vec4<u32>, 2>,  // band upper bounds, ascending (one band unless matryoshka)
  lists: u32,
  len: u32,
  d_in: u32,
  d_sae: u32,
  terms: u32,                   // bands
  rows: u32,
  capacity: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
// Texels per row of flat staging textures (`flatTexels` in staging.ts), set by Gpu.kernel: a
// division by a pipeline constant compiles to a multiply, by a uniform to a scalar divide per lane.
override FLAT_WIDTH: u32;
@group(0) @binding(1) var<storage, read> dense: array<f32>;
@group(0) @binding(2) var<storage, read_write> counts: array<u32>;
@group(0) @binding(3) var<storage, read_write> offsets: array<u32>;        // [lists + 1]
@group(0) @binding(4) var<storage, read_write> entry_index: array<u32>;      // [capacity]
@group(0) @binding(5) var<storage, read_write> entry_value: array<f32>;      // [capacity]
@group(0) @binding(6) var<storage, read_write> entry_owner: array<u32>;      // [capacity]
// W_dec, the decoder-term gradients and the encoder input are read as read-only storage textures
// (4 columns per texel, one row per texel row): llvmpipe gathers texel loads across SIMD lanes,
// while a storage-buffer load whose address differs per lane is a scalar loop over the lanes
// (about 30-40% faster decode and backward). Read-only storage textures measured faster than
// sampled ones (texture_2d): entry dots 57 -> 22 ms, per-latent backward 210-256 -> 185-189 ms.
@group(0) @binding(7) var w_dec: texture_storage_2d<rgba32float, read>;  // [d_sae, d_in / 4]
@group(0) @binding(8) var<storage, read> norms: array<f32>;            // [d_sae]
@group(0) @binding(9) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(10) var d_pre: texture_storage_2d<rgba32float, read>;  // [bands · rows, d_in / 4]
// Per latent-list entry e, at texel (e % FLAT_WIDTH, e / FLAT_WIDTH): (row b as a float,
// decoded activation, gradient at the linear pre-activation, decoder-norm gradient), written by
// entry_grads and read by latent_backward as one texel load instead of three storage-buffer
// loads, each a scalar loop over SIMD lanes on llvmpipe.
@group(0) @binding(11) var entries_out: texture_storage_2d<rgba32float, write>;
@group(0) @binding(12) var sae_in: texture_storage_2d<rgba32float, read>;  // [rows, d_in / 4]
@group(0) @binding(13) var<storage, read> linear_pre: array<f32>;      // [rows, d_sae]
@group(0) @binding(14) var<storage, read_write> dw_dec4: array<vec4<f32>>;
@group(0) @binding(15) var<storage, read_write> dw_enc: array<f32>;
@group(0) @binding(16) var<storage, read_write> db_enc: array<f32>;
@group(0) @binding(17) var<storage, read_write> d_norms: array<f32>;
@group(0) @binding(18) var entries_in: texture_storage_2d<rgba32float, read>;
@group(0) @binding(19) var<storage, read> extra_grad: array<f32>;      // [rows, d_sae] or [d_sae]
@group(0) @binding(20) var<storage, read_write> dispatch_args: array<u32>; // [3] workgroup counts
@group(0) @binding(21) var<storage, read_write> dense_out: array<f32>;  // [rows, d_sae]
@group(0) @binding(22) var<storage, read_write> row_bits: array<atomic<u32>>; // [rows, row_words]
@group(0) @binding(23) var<storage, read_write> col_bits: array<u32>;       // [d_sae, col_words]
// `dense` staged as flat texels (staging.ts: texel t at (t % FLAT_WIDTH, t / FLAT_WIDTH)).
@group(0) @binding(24) var dense_texels: texture_storage_2d<rgba32float, read>;
// Per latent, the decoder-norm gradient over the norm (dn_j / ‖W_dec[j]‖) that latent_backward
// folds into its W_dec row when FOLD_NORMS.
@group(0) @binding(25) var<storage, read> fold_scale: array<f32>;        // [d_sae]

// Activations were divided by the decoder row norms before decoding (rescale_acts_by_decoder_norm).
override RESCALE: bool = false;
// With OVERWRITE, latent_backward also adds fold_scale[j] · W_dec[j] to row j's gradient (the
// decoder-norm gradient's share, final before the call): the expression a separate pass over W_dec
// would add after it (TrainStep.finish), without staging W_dec and the gradient again.
override FOLD_NORMS: bool = false;
// A gradient w.r.t. the activations from other losses (L1) adds in: dense [rows, d_sae], or
// one value per latent with EXTRA_PER_LATENT.
override HAS_EXTRA: bool = false;
override EXTRA_PER_LATENT: bool = false;
// compress_count / compress_fill build latent lists (from col_bits), else row lists (row_bits).
override LATENT_LISTS: bool = false;
// The reconstruction's dL/df is computed per entry (false: extra_grad holds all of it).
override DOT: bool = true;
// latent_backward is the first to write dW_dec and dW_enc: it stores every latent's row and
// column (zeros for an empty list) instead of adding to them, which saves reading them back.
override OVERWRITE: bool = false;
// compress_bits keeps positive entries only (the masks of a pre-activation's ReLU).
override POSITIVE: bool = false;

fn band_bound(b: u32) -> u32 {
  return p.widths[b / 4u][b % 4u];
}

// The band latent j belongs to (the last one takes anything beyond the bounds).
fn band_of(j: u32) -> u32 {
  var band = 0u;
  while (band + 1u < p.terms && j >= band_bound(band)) { band++; }
  return band;
}

fn flat_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, size: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * size + lid;
}

// Bit masks of the nonzeros (POSITIVE: the entries > 0), both ways, from one read of the dense
// matrix: bit b of col_bits[j * col_words + w] is dense[32w + b, j] != 0, bit b of
// row_bits[r * row_words + w] is dense[r, 32w + b] != 0. The tiled GEMM (matmul.wgsl) can write
// the same masks of its positive outputs. The row words are zeroed by the caller and ORed atomically (integer
// atomics: the result does not depend on their order).
@compute @workgroup_size(64)
fn compress_bits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let id = flat_id(wid, nwg, lid, 64u);
  let col_words = (p.rows + 31u) / 32u;
  if (id >= p.d_sae * col_words) { return; }
  // Neighbouring invocations take neighbouring latents: their reads share cache lines.
  let j = id % p.d_sae;
  let w = id / p.d_sae;
  let row_words = (p.d_sae + 31u) / 32u;
  var bits = 0u;
  let rows = min(32u, p.rows - 32u * w);
  for (var b = 0u; b < rows; b++) {
    let r = 32u * w + b;
    let v = dense[r * p.d_sae + j];
    if (select(v != 0.0, v > 0.0, POSITIVE)) {
      bits |= 1u << b;
      atomicOr(&row_bits[r * row_words + j / 32u], 1u << (j % 32u));
    }
  }
  col_bits[j * col_words + w] = bits;
}

// compress_bits from `dense` staged as texels (d_sae % 4 == 0), four neighbouring latents per
// invocation: per row one texel load and at most one atomic OR, where compress_bits has four
// storage loads (each a scalar loop over SIMD lanes on llvmpipe) and up to four atomics.
@compute @workgroup_size(64)
fn compress_bits_staged(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
  let id = flat_id(wid, nwg, lid, 64u);
  let col_words = (p.rows + 31u) / 32u;
  let quads = p.d_sae / 4u;
  if (id >= quads * col_words) { return; }
  let q = id % quads;
  let w = id / quads;
  let row_words = (p.d_sae + 31u) / 32u;
  var bits = vec4<u32>();
  let rows = min(32u, p.rows - 32u * w);
  for (var b = 0u; b < rows; b++) {
    let r = 32u * w + b;
    let t = r * quads + q;
    let v = textureLoad(dense_texels, vec2<u32>(t % FLAT_WIDTH, t / FLAT_WIDTH));
    let hit = select(vec4<u32>(), vec4<u32>(1u), select(v != vec4<f32>(), v > vec4<f32>(), POSITIVE));
    bits |= hit << vec4<u32>(b);
    // Latents 4q..4q+3 are bits 4(q % 8)..4(q % 8)+3 of one row word.
    let nibble = dot(hit, vec4<u32>(1u, 2u, 4u, 8u));
    if (nibble != 0u) { atomicOr(&row_bits[r * row_words + q / 8u], nibble << (4u * (q % 8u))); }
  }
  col_bits[(4u * q) * col_words + w] = bits.x;
  col_bits[(4u * q + 1u) * col_words + w] = bits.y;
  col_bits[(4u * q + 2u) * col_words + w] = bits.z;
  col_bits[(4u * q + 3u) * col_words + w] = bits.w;
}

// Word w of list `list`'s mask (p.len words per list).
fn list_word(list: u32, w: u32) -> u32 {
  if (LATENT_LISTS) { return col_bits[list * p.len + w]; }
  return atomicLoad(&row_bits[list * p.len + w]);
}

@compute @workgroup_size(64)
fn compress_count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
  let list = flat_id(wid, nwg, lid, 64u);
  if (list >= p.lists) { return; }
  var n = 0u;
  for (var w = 0u; w < p.len; w++) { n += countOneBits(list_word(list, w)); }
  counts[list] = n;
}

var<workgroup> segment_sums: array<u32, 256>;

// Exclusive prefix sums of the counts in one workgroup: each invocation owns a contiguous segment.
@compute @workgroup_size(256)
fn compress_scan(@builtin(local_invocation_index) lid: u32) {
  let per = (p.lists + 255u) / 256u;
  let start = min(lid * per, p.lists);
  let end = min(start + per, p.lists);
  var sum = 0u;
  for (var i = start; i < end; i++) { sum += counts[i]; }
  segment_sums[lid] = sum;
  workgroupBarrier();
  if (lid == 0u) {
    var running = 0u;
    for (var t = 0u; t < 256u; t++) {
      let c = segment_sums[t];
      segment_sums[t] = running;
      running += c;
    }
    offsets[p.lists] = running;
  }
  workgroupBarrier();
  var running = segment_sums[lid];
  for (var i = start; i < end; i++) {
    offsets[i] = running;
    running += counts[i];
  }
}

// Each list's entries in index order: the set bits of its mask, lowest first.
@compute @workgroup_size(64)
fn compress_fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let list = flat_id(wid, nwg, lid, 64u);
  if (list >= p.lists) { return; }
  var at = offsets[list];
  for (var w = 0u; w < p.len; w++) {
    var bits = list_word(list, w);
    while (bits != 0u) {
      let m = 32u * w + countTrailingZeros(bits);
      bits &= bits - 1u;
      // Top-k selection bounds the nonzeros by the capacity; the guard only protects memory.
      if (at < p.capacity) {
        var element = list * p.d_sae + m;
        if (LATENT_LISTS) { element = m * p.d_sae + list; }
        entry_index[at] = m;
        entry_value[at] = dense[element];
        entry_owner[at] = list;
      }
      at++;
    }
  }
}

// latent_sums: out[j] = the sum of latent j's entry values in row order, i.e. the column sum of
// the dense matrix walked in row order: skipping its zeros leaves every rounding the same.
@compute @workgroup_size(64)
fn latent_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let j = flat_id(wid, nwg, lid, 64u);
  if (j >= p.d_sae) { return; }
  var acc = 0.0;
  let end = min(offsets[j + 1u], p.capacity);
  for (var e = offsets[j]; e < end; e++) { acc += entry_value[e]; }
  dense_out[j] = acc;
}

// Each invocation decodes SPAN vec4 columns of one row, `stride` apart: per entry it issues SPAN
// independent fetches of the decoder row, which overlap (one column per invocation was twice as
// slow). Rows of d_in are read as vec4
// (d_in % 4 == 0). One output block per width (band bounds, ascending; Matryoshka's prefixes and
// the full width): entries are sorted by latent, so each width's output is the running sum when
// the walk reaches it, the same sum a decode stopping there would give.
const SPAN = 8u;

@compute @workgroup_size(64)
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.y;
  let d_in4 = p.d_in / 4u;
  let stride = (d_in4 + SPAN - 1u) / SPAN;
  let i = wid.x * 64u + lid;
  if (i >= stride) { return; }
  // Columns past the row read its last one (valid memory) and are not stored.
  let col_{m} = min(i + {m}u * stride, d_in4 - 1u);  // unroll m<SPAN
  var acc_{m} = vec4<f32>();  // unroll m<SPAN
  let end = min(offsets[r + 1u], p.capacity);
  var band = 0u;
  var e = offsets[r];
  loop {
    // Past the last entry the walk is beyond every width.
    var j = 0xffffffffu;
    if (e < end) { j = entry_index[e]; }
    while (band < p.terms && j >= band_bound(band)) {
      let at = (band * p.rows + r) * d_in4 + i;
      if (i + {m}u * stride < d_in4) { out4[at + {m}u * stride] = acc_{m}; }  // unroll m<SPAN
      band++;
    }
    if (band >= p.terms) { break; }
    var coefficient = entry_value[e];
    if (RESCALE) { coefficient = coefficient / norms[j]; }
    acc_{m} += coefficient * textureLoad(w_dec, vec2<u32>(col_{m}, j));  // unroll m<SPAN
    e++;
  }
}

// Workgroup counts for entry_grads (64 entries each) from the number of entries, so the dispatch
// covers the entries there are rather than the capacity.
@compute @workgroup_size(1)
fn entry_dispatch() {
  let groups = (min(offsets[p.lists], p.capacity) + 63u) / 64u;
  let x = min(groups, 65535u);
  dispatch_args[0] = x;
  dispatch_args[1] = max(1u, (groups + 65534u) / 65535u);
  dispatch_args[2] = 1u;
}

// dL/df for the entries of a latent-list selection, written into a dense [rows, d_sae] matrix
// (zero elsewhere, by the caller): JumpReLU's fused backward reads it there.
@compute @workgroup_size(64)
fn entry_dots_dense(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let e = flat_id(wid, nwg, lid, 64u);
  if (e >= min(offsets[p.d_sae], p.capacity)) { return; }
  let b = entry_index[e];
  let j = entry_owner[e];
  dense_out[b * p.d_sae + j] = entry_dot(b, j);
}

// Per latent-list entry (row b, latent j, value a): g = dot(d_pre[band(j), b], W_dec[j]). Writes
// the entry's coefficients for latent_backward: the decoded activation (a, or a / norm), the
// gradient reaching the linear pre-activation, and the decoder-norm gradient (decoded = a / norm
// and hidden = linear_pre · norm both depend on it).
fn entry_dot(b: u32, j: u32) -> f32 {
  let d_in4 = p.d_in / 4u;
  let pre_row = band_of(j) * p.rows + b;
  var dot4 = vec4<f32>();
  for (var i = 0u; i < d_in4; i++) {
    dot4 += textureLoad(d_pre, vec2<u32>(i, pre_row)) * textureLoad(w_dec, vec2<u32>(i, j));
  }
  return (dot4.x + dot4.y) + (dot4.z + dot4.w);
}

fn extra_at(b: u32, j: u32) -> f32 {
  if (EXTRA_PER_LATENT) { return extra_grad[j]; }
  return extra_grad[b * p.d_sae + j];
}

@compute @workgroup_size(64)
fn entry_grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let e = flat_id(wid, nwg, lid, 64u);
  if (e >= min(offsets[p.d_sae], p.capacity)) { return; }
  let b = entry_index[e];
  let j = entry_owner[e];
  let a = entry_value[e];
  // Without DOT the whole gradient w.r.t. the activation comes in through extra_grad.
  var g = 0.0;
  if (DOT) { g = entry_dot(b, j); }
  if (RESCALE) {
    let norm = norms[j];
    var d_acts = g / norm;
    if (HAS_EXTRA) { d_acts += extra_at(b, j); }
    let d_norm = d_acts * linear_pre[b * p.d_sae + j] - (g / norm) * a / norm;
    textureStore(entries_out, entry_texel(e), vec4<f32>(f32(b), a / norm, d_acts * norm, d_norm));
  } else {
    if (HAS_EXTRA) { g += extra_at(b, j); }
    textureStore(entries_out, entry_texel(e), vec4<f32>(f32(b), a, g, 0.0));
  }
}

fn entry_texel(e: u32) -> vec2<u32> {
  return vec2<u32>(e % FLAT_WIDTH, e / FLAT_WIDTH);
}

// One workgroup per (QUAD consecutive latents, 64 invocations), each invocation LATENT_SPAN vec4
// columns of d_in `stride` apart (independent loads in flight, as in decode): the W_dec row and
// W_enc column gradients of the latents' entries, plus b_enc and decoder-norm sums. Gradients
// accumulate (+=) into zero-initialised tensors, so several calls (main and auxiliary selections)
// add up, unless OVERWRITE.
// W_enc's gradient is [d_in, d_sae]: a latent's column is d_in scattered values. Taking QUAD
// latents per invocation makes its stores come in runs of QUAD adjacent values, one cache line
// fetched per run instead of per value. Reference shape, standard SAE: 187 ms with one latent per
// invocation, 115 with 4, 118 with 8 or 16 (topk's two calls: 143, 130, 113, 125). Three more
// alternating rounds of 4 against 8: topk 90-101 against 110-127 ms, standard 106-183 against
// 109-167 (the VM's noise).
const LATENT_SPAN = 4u;
const QUAD = 4u;

struct LatentSums {
  dec: array<vec4<f32>, LATENT_SPAN>,
  enc: array<vec4<f32>, LATENT_SPAN>,
  bias: f32,
  norm: f32,
}

// Latent j's sums over its entries, for the vec4 columns `col` (zero past d_sae).
fn sums_of_latent(j: u32, col: array<u32, LATENT_SPAN>) -> LatentSums {
  var sums: LatentSums;
  if (j >= p.d_sae) { return sums; }
  let band_rows = band_of(j) * p.rows;
  let end = min(offsets[j + 1u], p.capacity);
  for (var e = offsets[j]; e < end; e++) {
    let entry = textureLoad(entries_in, entry_texel(e));
    let b = u32(entry.x);  // exact: rows < 2^24
    let decoded = entry.y;
    let grad = entry.z;
    sums.dec[{m}u] += decoded * textureLoad(d_pre, vec2<u32>(col[{m}u], band_rows + b));  // unroll m<LATENT_SPAN
    sums.enc[{m}u] += grad * textureLoad(sae_in, vec2<u32>(col[{m}u], b));  // unroll m<LATENT_SPAN
    sums.bias += grad;
    if (RESCALE) { sums.norm += entry.w; }
  }
  return sums;
}

fn store_dec_row(j: u32, column: u32, dec: vec4<f32>, fold: f32) {
  let at = j * (p.d_in / 4u) + column;
  if (!OVERWRITE) { dw_dec4[at] += dec; return; }
  var row = dec;
  if (FOLD_NORMS) { row += textureLoad(w_dec, vec2<u32>(column, j)) * fold; }
  dw_dec4[at] = row;
}

fn store_enc(at: u32, v: f32) {
  if (OVERWRITE) { dw_enc[at] = v; } else { dw_enc[at] += v; }
}

@compute @workgroup_size(64)
fn latent_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let d_in4 = p.d_in / 4u;
  let stride = (d_in4 + LATENT_SPAN - 1u) / LATENT_SPAN;
  let slices = (stride + 63u) / 64u;
  let id = wid.y * nwg.x + wid.x;
  let j0 = (id / slices) * QUAD;
  let i = (id % slices) * 64u + lid;
  if (j0 >= p.d_sae || i >= stride) { return; }
  let j_end = min(j0 + QUAD, p.d_sae);
  // Nothing to add (most latents of the auxiliary selection): skip the scattered W_enc writes.
  if (min(offsets[j0], p.capacity) >= min(offsets[j_end], p.capacity) && !OVERWRITE) { return; }
  // Columns past the row read its last one (valid memory) and are not stored.
  var col: array<u32, LATENT_SPAN>;
  col[{m}u] = min(i + {m}u * stride, d_in4 - 1u);  // unroll m<LATENT_SPAN
  let sums_{q} = sums_of_latent(j0 + {q}u, col);  // unroll q<QUAD
  let live_{q} = j0 + {q}u < p.d_sae;  // unroll q<QUAD
  var fold_{q} = 0.0;  // unroll q<QUAD
  if (FOLD_NORMS && live_{q}) { fold_{q} = fold_scale[j0 + {q}u]; }  // unroll q<QUAD
  let stored_{m} = i + {m}u * stride < d_in4;  // unroll m<LATENT_SPAN
  if (live_{q} && stored_{m}) { store_dec_row(j0 + {q}u, col[{m}u], sums_{q}.dec[{m}u], fold_{q}); }  // unroll q<QUAD m<LATENT_SPAN
  // W_enc row 4 col[m] + c gets the QUAD latents' gradients as one run of adjacent values.
  if (stored_{m} && live_{q}) { store_enc((4u * col[{m}u] + {c}u) * p.d_sae + j0 + {q}u, sums_{q}.enc[{m}u][{c}u]); }  // unroll m<LATENT_SPAN c<4 q<QUAD
  if (i == 0u) {
    if (live_{q}) { db_enc[j0 + {q}u] += sums_{q}.bias; }  // unroll q<QUAD
    if (live_{q}) { d_norms[j0 + {q}u] += sums_{q}.norm; }  // unroll q<QUAD
  }
}
