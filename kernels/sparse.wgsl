// Sparse training step of the TopK family: the selected activations of a [rows, d_sae] batch kept
// as compressed lists (by row for decoding, by latent for gradients), so that decoding and every
// gradient cost O(nonzeros · d_in) instead of a dense [rows, d_sae] x [d_sae, d_in] product.
//
// compress_count / compress_scan / compress_fill: the nonzeros of a dense matrix as `lists` lists
//   (rows: outer = cols, inner = 1; columns: outer = 1, inner = cols), in entry_index order. `entry_index`
//   holds each entry's position inside its list, `entry_owner` the list it belongs to.
// decode: out[r] = sum over row r's entries with latent < width of entry_value / norm · W_dec[latent].
// entry_grads: per latent-list entry (row b, latent j): sum over terms t with j < width_t of
//   dot(d_pre_t[b], W_dec[j]), the gradient reaching the decoded activation.
// latent_backward: per latent j and d_in slice: the W_dec row, W_enc column, b_enc and decoder-norm
//   gradients from j's entries. Every sum runs in a fixed order, so results are deterministic.
struct Params {
  widths: array<vec4<u32>, 2>,  // per decoder term: latents below it contribute (matryoshka)
  lists: u32,
  len: u32,
  outer: u32,
  inner: u32,
  d_in: u32,
  d_sae: u32,
  terms: u32,
  width: u32,
  rows: u32,
  capacity: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dense: array<f32>;
@group(0) @binding(2) var<storage, read_write> counts: array<u32>;
@group(0) @binding(3) var<storage, read_write> offsets: array<u32>;        // [lists + 1]
@group(0) @binding(4) var<storage, read_write> entry_index: array<u32>;      // [capacity]
@group(0) @binding(5) var<storage, read_write> entry_value: array<f32>;      // [capacity]
@group(0) @binding(6) var<storage, read_write> entry_owner: array<u32>;      // [capacity]
@group(0) @binding(7) var<storage, read> w_dec: array<f32>;            // [d_sae, d_in]
@group(0) @binding(8) var<storage, read> norms: array<f32>;            // [d_sae]
@group(0) @binding(9) var<storage, read_write> out: array<f32>;
@group(0) @binding(10) var<storage, read> d_pre: array<f32>;           // [terms, rows, d_in]
@group(0) @binding(11) var<storage, read_write> entry_grad: array<f32>; // [capacity]
@group(0) @binding(12) var<storage, read> sae_in: array<f32>;          // [rows, d_in]
@group(0) @binding(13) var<storage, read> linear_pre: array<f32>;          // [rows, d_sae]
@group(0) @binding(14) var<storage, read_write> dw_dec: array<f32>;
@group(0) @binding(15) var<storage, read_write> dw_enc: array<f32>;
@group(0) @binding(16) var<storage, read_write> db_enc: array<f32>;
@group(0) @binding(17) var<storage, read_write> d_norms: array<f32>;

// Activations were divided by the decoder row norms before decoding (rescale_acts_by_decoder_norm).
override RESCALE: bool = false;

fn term_width(t: u32) -> u32 {
  return p.widths[t / 4u][t % 4u];
}

fn flat_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, size: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * size + lid;
}

@compute @workgroup_size(64)
fn compress_count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
  let list = flat_id(wid, nwg, lid, 64u);
  if (list >= p.lists) { return; }
  var n = 0u;
  for (var m = 0u; m < p.len; m++) {
    if (dense[list * p.outer + m * p.inner] != 0.0) { n++; }
  }
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

@compute @workgroup_size(64)
fn compress_fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
  let list = flat_id(wid, nwg, lid, 64u);
  if (list >= p.lists) { return; }
  var at = offsets[list];
  for (var m = 0u; m < p.len; m++) {
    let v = dense[list * p.outer + m * p.inner];
    if (v != 0.0) {
      // Top-k selection bounds the nonzeros by the capacity; the guard only protects memory.
      if (at < p.capacity) {
        entry_index[at] = m;
        entry_value[at] = v;
        entry_owner[at] = list;
      }
      at++;
    }
  }
}

// One workgroup per (row, 256-wide slice of d_in). Entries are sorted by latent, so a prefix
// width stops the walk early.
@compute @workgroup_size(256)
fn decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = wid.y;
  let i = wid.x * 256u + lid;
  if (i >= p.d_in) { return; }
  var acc = 0.0;
  let end = min(offsets[r + 1u], p.capacity);
  for (var e = offsets[r]; e < end; e++) {
    let j = entry_index[e];
    if (j >= p.width) { break; }
    var coefficient = entry_value[e];
    if (RESCALE) { coefficient = coefficient / norms[j]; }
    acc += coefficient * w_dec[j * p.d_in + i];
  }
  out[r * p.d_in + i] = acc;
}

@compute @workgroup_size(64)
fn entry_grads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let e = flat_id(wid, nwg, lid, 64u);
  if (e >= min(offsets[p.d_sae], p.capacity)) { return; }
  let b = entry_index[e];
  let j = entry_owner[e];
  var g = 0.0;
  for (var t = 0u; t < p.terms; t++) {
    if (j < term_width(t)) {
      let base = (t * p.rows + b) * p.d_in;
      var dot = 0.0;
      for (var i = 0u; i < p.d_in; i++) { dot += d_pre[base + i] * w_dec[j * p.d_in + i]; }
      g += dot;
    }
  }
  entry_grad[e] = g;
}

// Gradients accumulate (+=) into zero-initialised tensors, so several calls (main and auxiliary
// selections) add up. hidden = linear_pre · norm when rescaling, else hidden = linear_pre.
@compute @workgroup_size(256)
fn latent_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let slices = (p.d_in + 255u) / 256u;
  let id = wid.y * nwg.x + wid.x;
  let j = id / slices;
  let i = (id % slices) * 256u + lid;
  if (j >= p.d_sae || i >= p.d_in) { return; }
  var norm = 1.0;
  if (RESCALE) { norm = norms[j]; }
  var acc_dec = 0.0;
  var acc_enc = 0.0;
  var d_norm = 0.0;
  var d_bias = 0.0;
  let end = min(offsets[j + 1u], p.capacity);
  for (var e = offsets[j]; e < end; e++) {
    let b = entry_index[e];
    let a = entry_value[e];
    var d_out = 0.0;
    for (var t = 0u; t < p.terms; t++) {
      if (j < term_width(t)) { d_out += d_pre[(t * p.rows + b) * p.d_in + i]; }
    }
    var d_linear = entry_grad[e];
    if (RESCALE) {
      // decoded = a / norm and hidden = linear_pre · norm: both paths reach the decoder norm.
      let d_acts = entry_grad[e] / norm;
      d_norm += d_acts * linear_pre[b * p.d_sae + j] - d_acts * a / norm;
      acc_dec += (a / norm) * d_out;
      d_linear = d_acts * norm;
    } else {
      acc_dec += a * d_out;
    }
    acc_enc += sae_in[b * p.d_in + i] * d_linear;
    d_bias += d_linear;
  }
  dw_dec[j * p.d_in + i] += acc_dec;
  dw_enc[i * p.d_sae + j] += acc_enc;
  if (i == 0u) {
    db_enc[j] += d_bias;
    d_norms[j] += d_norm;
  }
}
