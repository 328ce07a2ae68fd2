// out[i] = op(a[i]); OP is a pipeline constant. alpha/beta parameterise some ops.
struct Params { n: u32, _pad: u32, alpha: f32, beta: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// In-place variant: WebGPU forbids binding one buffer as both read-only and read-write.
@group(0) @binding(1) var<storage, read_write> a_out: array<f32>;

override OP: u32 = 0u;

fn apply(x: f32) -> f32 {
  switch OP {
    case 0u: { return max(x, 0.0); }
    // 1 where x > alpha (masks, L0 counts)
    case 1u: { return select(0.0, 1.0, x > p.alpha); }
    case 2u: { return abs(x); }
    case 3u: { return x * x; }
    case 4u: { return sqrt(x); }
    case 5u: { return exp(x); }
    // alpha*x + beta
    case 6u: { return p.alpha * x + p.beta; }
    case 7u: { return sign(x); }
    case 8u: { return 1.0 / x; }
    case 9u: { return log(x); }
    // min(alpha*x, beta)
    default: { return min(p.alpha * x, p.beta); }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  out[i] = apply(a[i]);
}

@compute @workgroup_size(256)
fn in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  a_out[i] = apply(a_out[i]);
}
