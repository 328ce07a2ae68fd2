// One Adam step in torch's single-tensor order (torch.optim.Adam, no weight decay):
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;  p -= step_size * m / (sqrt(v)/sqrt(bc2) + eps)
// with step_size = lr / (1 - b1^t) and bc2 = 1 - b2^t computed on the host in float64.
// 1-beta1 and 1-beta2 also come from the host: f32(1 - f32(0.999)) is 1.3e-5 off torch's
// f32(0.001), enough to move a 150-step run off SAELens's trajectory.
struct Params {
  n: u32, _pad: u32, beta1: f32, beta2: f32, step_size: f32, bc2_sqrt: f32, eps: f32,
  one_minus_beta1: f32, one_minus_beta2: f32, _pad1: f32, _pad2: f32, _pad3: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq: array<f32>;
// clip_grad_norm_'s [norm, scale]: gradients are scaled as they are read (same f32 product as
// scaling them in place first).
@group(0) @binding(5) var<storage, read> clip: array<f32>;

override CLIP: bool = false;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  var g = grad[i];
  if (CLIP) { g = g * clip[1]; }
  let m = exp_avg[i] * p.beta1 + p.one_minus_beta1 * g;
  let v = exp_avg_sq[i] * p.beta2 + p.one_minus_beta2 * g * g;
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  let denom = sqrt(v) / p.bc2_sqrt + p.eps;
  param[i] = param[i] - p.step_size * (m / denom);
}
