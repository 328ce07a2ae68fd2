// Reductions of a row-major [rows, cols] matrix.
// rows_main: out[r] = sum_j f(a[r, j]) with one workgroup per row (strided partial sums, then a
//   tree in workgroup memory). F: 0 identity, 1 square, 2 abs, 3 count(x > alpha), 4 |x|^alpha.
// rows_short: the same sums in the same order, one invocation per row: for many short rows
//   (decoder row norms, gradient norms of [d_sae, d_in]), where rows_main's barriers dominate.
// cols_main: out[j] = sum_r a[r, j], one invocation per column walking rows in order (coalesced).
// row_dots: out[r] = alpha · sum_j a[r, j] · v[j] + beta · out[r], one invocation per row.
// Matrices larger than one binding come in chunks of whole rows: `rows` rows starting at global
// row `row0`, whose first value is a[shift]. cols_main adds later chunks to the running sums.
// The *_staged variants (cols % 4 == 0) read a, and v, from flat staging textures instead, texel
// t at (t % FLAT_WIDTH, t / FLAT_WIDTH) (`flatTexels` in staging.ts; the piece's first row is texel
// 0): llvmpipe runs a storage-buffer load whose address differs per lane as a scalar loop over
// the SIMD lanes, but gathers texel loads. They sum in the same order as the buffer variants.
struct Params { rows: u32, cols: u32, row0: u32, shift: u32, alpha: f32, beta: f32 }
// Texels per row of flat staging textures (`flatTexels` in staging.ts), set by Gpu.kernel: a
// division by a pipeline constant compiles to a multiply, by a uniform to a scalar divide per lane.
override FLAT_WIDTH: u32;
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var a_in: texture_storage_2d<rgba32float, read>;
@group(0) @binding(5) var v_in: texture_storage_2d<rgba32float, read>;

fn texel(t: u32) -> vec2<u32> {
  return vec2<u32>(t % FLAT_WIDTH, t / FLAT_WIDTH);
}

override F: u32 = 0u;
const WG = 256u;

fn f(x: f32) -> f32 {
  switch F {
    case 0u: { return x; }
    case 1u: { return x * x; }
    case 2u: { return abs(x); }
    case 3u: { return select(0.0, 1.0, x > p.alpha); }
    default: { return pow(abs(x), p.alpha); }
  }
}

// rows_main runs 64 invocations per row: its time is mostly barriers, which fewer SIMD groups make
// cheaper. Invocation lid keeps the strided partial sums of lanes lid, lid + 64, lid + 128 and
// lid + 192 of the 256 (element j goes to lane j % 256, in ascending order), adds them as the
// tree's first two levels would (stride 128, then 64), and the last six levels run in workgroup
// memory: the same sums as 256 invocations with a full tree.
const MAIN_WG = 64u;
var<workgroup> partial: array<f32, MAIN_WG>;

@compute @workgroup_size(MAIN_WG)
fn rows_main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  // Uniform control flow: every invocation reaches the barriers even past the last row.
  let valid = r < p.rows;
  var lanes = vec4<f32>();
  if (valid) {
    let base = p.shift + r * p.cols;
    for (var j = lid; j < p.cols; j += WG) {
      lanes.x += f(a[base + j]);
      if (j + MAIN_WG < p.cols) { lanes.y += f(a[base + j + MAIN_WG]); }
      if (j + 2u * MAIN_WG < p.cols) { lanes.z += f(a[base + j + 2u * MAIN_WG]); }
      if (j + 3u * MAIN_WG < p.cols) { lanes.w += f(a[base + j + 3u * MAIN_WG]); }
    }
  }
  partial[lid] = (lanes.x + lanes.z) + (lanes.y + lanes.w);
  workgroupBarrier();
  for (var stride = MAIN_WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u && valid) { out[p.row0 + r] = partial[0]; }
}

// rows_main from staged rows (cols % 4 == 0): texel t of a row holds lanes 4(t % 64) .. +3, so
// invocation lid keeps lanes 4lid .. 4lid + 3, and all eight levels of the tree run in workgroup
// memory: the same sums as rows_main. [1024, 12288] row sums: 52 -> 19 ms, the copy included.
var<workgroup> lane_sums: array<f32, WG>;

@compute @workgroup_size(MAIN_WG)
fn rows_main_staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  // Uniform control flow: every invocation reaches the barriers even past the last row.
  let valid = r < p.rows;
  var lanes = vec4<f32>();
  if (valid) {
    let texels = p.cols / 4u;
    for (var t = lid; t < texels; t += MAIN_WG) {
      let x = textureLoad(a_in, texel(r * texels + t));
      lanes += vec4<f32>(f(x.x), f(x.y), f(x.z), f(x.w));
    }
  }
  lane_sums[4u * lid] = lanes.x;
  lane_sums[4u * lid + 1u] = lanes.y;
  lane_sums[4u * lid + 2u] = lanes.z;
  lane_sums[4u * lid + 3u] = lanes.w;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    for (var l = lid; l < stride; l += MAIN_WG) { lane_sums[l] += lane_sums[l + stride]; }
    workgroupBarrier();
  }
  if (lid == 0u && valid) { out[p.row0 + r] = lane_sums[0]; }
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
  out[p.row0 + r] = lanes_total(&lanes);
}

// rows_main's pairwise tree over the 256 strided partial sums.
fn lanes_total(lanes: ptr<function, array<f32, WG>>) -> f32 {
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    for (var l = 0u; l < stride; l++) { (*lanes)[l] += (*lanes)[l + stride]; }
  }
  return (*lanes)[0];
}

@compute @workgroup_size(64)
fn rows_short_staged(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * 64u + lid;
  if (r >= p.rows) { return; }
  let texels = p.cols / 4u;
  var lanes: array<f32, WG>;
  // Element 4t + c goes to lane (4t + c) % 256 = (4t) % 256 + c, as in rows_short.
  for (var t = 0u; t < texels; t++) {
    let x = textureLoad(a_in, texel(r * texels + t));
    let l = (4u * t) % WG;
    lanes[l] += f(x.x);
    lanes[l + 1u] += f(x.y);
    lanes[l + 2u] += f(x.z);
    lanes[l + 3u] += f(x.w);
  }
  out[p.row0 + r] = lanes_total(&lanes);
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

@compute @workgroup_size(64)
fn row_dots_staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let r = (wid.y * nwg.x + wid.x) * 64u + lid;
  if (r >= p.rows) { return; }
  let texels = p.cols / 4u;
  var acc = 0.0;
  for (var t = 0u; t < texels; t++) {
    let x = textureLoad(a_in, texel(r * texels + t));
    let y = textureLoad(v_in, texel(t));
    acc = acc + x.x * y.x;
    acc = acc + x.y * y.y;
    acc = acc + x.z * y.z;
    acc = acc + x.w * y.w;
  }
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

// cols_main for 4 columns per invocation (one texel of each row), from staged rows.
@compute @workgroup_size(256)
fn cols_main_staged(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  let texels = p.cols / 4u;
  if (t >= texels) { return; }
  let out4 = vec4<f32>(out[4u * t], out[4u * t + 1u], out[4u * t + 2u], out[4u * t + 3u]);
  var acc = select(vec4<f32>(), out4, p.row0 > 0u);
  for (var r = 0u; r < p.rows; r++) { acc += textureLoad(a_in, texel(r * texels + t)); }
  out[4u * t] = acc.x;
  out[4u * t + 1u] = acc.y;
  out[4u * t + 2u] = acc.z;
  out[4u * t + 3u] = acc.w;
}
