// One Adam step in torch's single-tensor order (torch.optim.Adam, no weight decay):
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;  p -= step_size * m / (sqrt(v)/sqrt(bc2) + eps)
// with step_size = lr / (1 - b1^t) and bc2 = 1 - b2^t computed on the host in float64.
// 1-beta1 and 1-beta2 also come from the host: f32(1 - f32(0.999)) is 1.3e-5 off torch's
// f32(0.001), enough to move a 150-step run off SAELens's trajectory.
struct Params {
  n: u32, beta1: f32, beta2: f32, step_size: f32, bc2_sqrt: f32, eps: f32,
  one_minus_beta1: f32, one_minus_beta2: f32, _pad1: f32, _pad2: f32, _pad3: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
// Texels per row of flat staging textures (`flatTexels` in staging.ts), set by Gpu.kernel: a
// division by a pipeline constant compiles to a multiply, by a uniform to a scalar divide per lane.
override FLAT_WIDTH: u32;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq: array<f32>;
// clip_grad_norm_'s [norm, scale]: gradients are scaled as they are read (same f32 product as
// scaling them in place first).
@group(0) @binding(5) var<storage, read> clip: array<f32>;

// staged4 (n % 4 == 0) updates four elements per invocation and reads its operands from flat
// staging textures (texel i at (i % FLAT_WIDTH, i / FLAT_WIDTH); `flatTexels` in staging.ts): llvmpipe
// runs a storage-buffer load as a scalar loop over SIMD lanes, but gathers texel loads, while
// storage-buffer stores are cheap. It writes through vec4 views of the same bindings. Both entry
// points share `adam_update`, so every element gets the same f32 arithmetic either way.
@group(0) @binding(1) var<storage, read_write> param4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> exp_avg4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq4: array<vec4<f32>>;
@group(0) @binding(6) var param_in: texture_storage_2d<rgba32float, read>;
@group(0) @binding(7) var grad_in: texture_storage_2d<rgba32float, read>;
@group(0) @binding(8) var exp_avg_in: texture_storage_2d<rgba32float, read>;
@group(0) @binding(9) var exp_avg_sq_in: texture_storage_2d<rgba32float, read>;

override CLIP: bool = false;

struct Updated { param: vec4<f32>, m: vec4<f32>, v: vec4<f32> }

// The clip scale (1 without clipping), read by each entry point before any branch: llvmpipe
// loads a constant address once for all SIMD lanes only outside control flow.
fn clip_scale() -> f32 {
  if (CLIP) { return clip[1]; }
  return 1.0;
}

fn adam_update(param_in: vec4<f32>, grad_in: vec4<f32>, m_in: vec4<f32>, v_in: vec4<f32>,
               scale: f32) -> Updated {
  var g = grad_in;
  if (CLIP) { g = g * scale; }
  let m = m_in * p.beta1 + p.one_minus_beta1 * g;
  let v = v_in * p.beta2 + p.one_minus_beta2 * g * g;
  let denom = sqrt(v) / p.bc2_sqrt + p.eps;
  return Updated(param_in - p.step_size * (m / denom), m, v);
}

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  let scale = clip_scale();
  if (i >= p.n) { return; }
  let u = adam_update(vec4(param[i]), vec4(grad[i]), vec4(exp_avg[i]), vec4(exp_avg_sq[i]), scale);
  exp_avg[i] = u.m.x;
  exp_avg_sq[i] = u.v.x;
  param[i] = u.param.x;
}

@compute @workgroup_size(256)
fn staged4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid);
  let scale = clip_scale();
  if (i >= p.n / 4u) { return; }
  let texel = vec2<u32>(i % FLAT_WIDTH, i / FLAT_WIDTH);
  let u = adam_update(textureLoad(param_in, texel), textureLoad(grad_in, texel),
                      textureLoad(exp_avg_in, texel), textureLoad(exp_avg_sq_in, texel), scale);
  exp_avg4[i] = u.m;
  exp_avg_sq4[i] = u.v;
  param4[i] = u.param;
}
