// Reductions of a row-major [rows, cols] matrix.
// rows_main: out[r] = sum_j f(a[r, j]) with one workgroup per row (strided partial sums, then a
//   tree in workgroup memory). F: 0 identity, 1 square, 2 abs, 3 count(x > alpha), 4 |x|^alpha.
// rows_short: the same sums in the same order, one invocation per row: for many short rows
//   (decoder row norms, gradient norms of [d_sae, d_in]), where rows_main's barriers dominate.
// cols_main: out[j] = sum_r a[r, j], one invocation per column walking rows in order (coalesced).
// row_dots: out[r] = alpha · sum_j a[r, j] · v[j] + beta · out[r], one invocation per row.
// Matrices larger than one binding come in chunks of whole rows: `rows` rows starting at global
// row `row0`, whose first value is a[shift]. cols_main adds later chunks to the running sums.
struct Params { rows: u32, cols: u32, row0: u32, shift: u32, alpha: f32, beta: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;

override F: u32 = 0u;
const WG = 256u;
var<workgroup> partial: array<f32, WG>;

fn f(x: f32) -> f32 {
  switch F {
    case 0u: { return x; }
    case 1u: { return x * x; }
    case 2u: { return abs(x); }
    case 3u: { return select(0.0, 1.0, x > p.alpha); }
    default: { return pow(abs(x), p.alpha); }
  }
}

// Sums the workgroup's partial sums (every invocation must call it: it has barriers).
fn workgroup_sum(lid: u32, acc: f32) -> f32 {
  partial[lid] = acc;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  return partial[0];
}

@compute @workgroup_size(256)
fn rows_main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  // Uniform control flow: every invocation reaches the barriers even past the last row.
  let valid = r < p.rows;
  var acc = 0.0;
  if (valid) {
    let base = p.shift + r * p.cols;
    for (var j = lid; j < p.cols; j += WG) { acc += f(a[base + j]); }
  }
  let total = workgroup_sum(lid, acc);
  if (lid == 0u && valid) { out[p.row0 + r] = total; }
}

// rows_short: rows_main's arithmetic, bit for bit, in one invocation: the 256 strided partial
// sums, then the same pairwise tree.
@compute @workgroup_size(64)
fn rows_short(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * 64u + lid;
  if (r >= p.rows) { return; }
  let base = p.shift + r * p.cols;
  var lanes: array<f32, WG>;
  for (var j = 0u; j < p.cols; j++) { lanes[j % WG] += f(a[base + j]); }
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    for (var l = 0u; l < stride; l++) { lanes[l] += lanes[l + stride]; }
  }
  out[p.row0 + r] = lanes[0];
}

// row_dots: out[r] = alpha · Σ_j a[r, j] · v[j] + beta · out[r], one invocation per row summing
// in index order: the same rounding as a one-column GEMM (parity traces depend on it), without
// that GEMM's idle lanes.
@compute @workgroup_size(64)
fn row_dots(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * 64u + lid;
  if (r >= p.rows) { return; }
  let base = p.shift + r * p.cols;
  var acc = 0.0;
  for (var j = 0u; j < p.cols; j++) { acc = acc + a[base + j] * v[j]; }
  let r_out = p.row0 + r;
  out[r_out] = p.alpha * acc + p.beta * out[r_out];
}

@compute @workgroup_size(256)
fn cols_main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  if (j >= p.cols) { return; }
  var acc = select(0.0, out[j], p.row0 > 0u);
  for (var r = 0u; r < p.rows; r++) { acc += a[p.shift + r * p.cols + j]; }
  out[j] = acc;
}
