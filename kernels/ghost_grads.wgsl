// Ghost-grads loss of SAELens 5.x (`TrainingSAE.calculate_ghost_grad_loss`), one workgroup per
// batch row, given raw = exp(hidden_pre[:, dead]) · W_dec[dead] (computed by the caller):
//   residual r = x − sae_out
//   s = ‖r‖ / (1e-6 + 2‖raw‖)                    (detached in SAELens)
//   g = raw · s,  m = (g − r)²                    (per element, against the detached residual)
//   w = r² / (m + 1e-6)                           (detached rescaling; r² is the per-item MSE)
//   row_loss[b] = Σ_d w·m                         (the caller sums rows and divides by rows·cols)
//   d_raw = scale · w · 2(g − r) · s              (gradient of scale·Σ w·m w.r.t. raw)
struct Params { rows: u32, cols: u32, scale: f32, _pad: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> raw: array<f32>;
@group(0) @binding(2) var<storage, read> sae_out: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> d_raw: array<f32>;

const WG = 256u;
var<workgroup> part_a: array<f32, WG>;
var<workgroup> part_b: array<f32, WG>;

// Sums part_a and part_b over the workgroup into element 0 (uniform control flow required).
fn reduce_pair(lid: u32) {
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      part_a[lid] += part_a[lid + stride];
      part_b[lid] += part_b[lid + stride];
    }
    workgroupBarrier();
  }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  let valid = row < p.rows;
  let base = row * p.cols;

  // Pass 1: ‖r‖² and ‖raw‖².
  var res_sq = 0.0;
  var raw_sq = 0.0;
  if (valid) {
    for (var j = lid; j < p.cols; j += WG) {
      let r = x[base + j] - sae_out[base + j];
      res_sq += r * r;
      raw_sq += raw[base + j] * raw[base + j];
    }
  }
  part_a[lid] = res_sq;
  part_b[lid] = raw_sq;
  reduce_pair(lid);
  let s = sqrt(part_a[0]) / (1e-6 + 2.0 * sqrt(part_b[0]));
  workgroupBarrier();

  // Pass 2: the rescaled per-element loss and its gradient.
  var loss = 0.0;
  if (valid) {
    for (var j = lid; j < p.cols; j += WG) {
      let r = x[base + j] - sae_out[base + j];
      let diff = raw[base + j] * s - r;
      let m = diff * diff;
      let w = (r * r) / (m + 1e-6);
      loss += w * m;
      d_raw[base + j] = p.scale * w * 2.0 * diff * s;
    }
  }
  part_a[lid] = loss;
  part_b[lid] = 0.0;
  reduce_pair(lid);
  if (lid == 0u && valid) { row_loss[row] = part_a[0]; }
}
