// out[i] = op(a[i], b[...]) with b broadcast: FULL (same shape), PER_COL (b[j], a row vector),
// PER_ROW (b[r], a column vector) or SCALAR (b[0]). OP and BCAST are pipeline constants so each
// variant compiles to straight-line code.
struct Params { n: u32, cols: u32, alpha: f32, beta: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// In-place variant: WebGPU forbids binding one buffer as both read-only and read-write.
@group(0) @binding(1) var<storage, read_write> a_out: array<f32>;

override OP: u32 = 0u;
override BCAST: u32 = 0u;

fn b_at(i: u32) -> f32 {
  switch BCAST {
    case 0u: { return b[i]; }
    case 1u: { return b[i % p.cols]; }
    case 2u: { return b[i / p.cols]; }
    default: { return b[0]; }
  }
}

fn apply(x: f32, y: f32) -> f32 {
  switch OP {
    case 0u: { return x + y; }
    case 1u: { return x - y; }
    case 2u: { return x * y; }
    case 3u: { return x / y; }
    // alpha*x + beta*y
    case 4u: { return p.alpha * x + p.beta * y; }
    // x where y > alpha, else 0 (ReLU/threshold backward, masks)
    case 5u: { return select(0.0, x, y > p.alpha); }
    // x * y * alpha
    case 6u: { return x * y * p.alpha; }
    // (x - y)^2
    case 7u: { let d = x - y; return d * d; }
    // alpha * (x - y): gradient of squared error
    case 8u: { return p.alpha * (x - y); }
    // x where y > alpha, else -inf (restricts a top-k to a masked subset)
    default: { return select(bitcast<f32>(0xff800000u), x, y > p.alpha); }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  out[i] = apply(a[i], b_at(i));
}

@compute @workgroup_size(256)
fn in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.n) { return; }
  a_out[i] = apply(a_out[i], b_at(i));
}
