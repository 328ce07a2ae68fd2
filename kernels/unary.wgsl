// out[i] = op(a[i]); OP is a pipeline constant. alpha/beta parameterise some ops. The op table
// is written once, on vec4s. staged4 handles four elements per invocation (n % 4 == 0) and reads
// a from a flat staging texture, texel t at (t % FLAT_WIDTH, t / FLAT_WIDTH), for the reason given in
// binary.wgsl; it also serves in-place updates (out = a).
struct Params { n: u32, alpha: f32, beta: f32 }
// Texels per row of flat staging textures (`flatTexels` in staging.ts), set by Gpu.kernel: a
// division by a pipeline constant compiles to a multiply, by a uniform to a scalar divide per lane.
override FLAT_WIDTH: u32;
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
// The in-place scalar variant reads and writes `a` through one binding (WebGPU forbids binding
// one buffer as both read-only and read-write); staged4 writes through a vec4 view.
@group(0) @binding(1) var<storage, read_write> a_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(3) var a_in: texture_storage_2d<rgba32float, read>;

override OP: u32 = 0u;

fn apply(x: vec4<f32>) -> vec4<f32> {
  switch OP {
    case 0u: { return max(x, vec4<f32>(0.0)); }
    // 1 where x > alpha (masks, L0 counts)
    case 1u: { return select(vec4<f32>(0.0), vec4<f32>(1.0), x > vec4<f32>(p.alpha)); }
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
    default: { return min(p.alpha * x, vec4<f32>(p.beta)); }
  }
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  out[i] = apply(vec4<f32>(a[i])).x;
}

@compute @workgroup_size(256)
fn in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  a_out[i] = apply(vec4<f32>(a_out[i])).x;
}

@compute @workgroup_size(256)
fn staged4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n / 4u) { return; }
  out4[i] = apply(textureLoad(a_in, vec2<u32>(i % FLAT_WIDTH, i / FLAT_WIDTH)));
}
