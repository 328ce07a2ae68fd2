// out[i] = op(a[i], b[...]) with b broadcast: FULL (same shape), PER_COL (b[j], a row vector),
// PER_ROW (b[r], a column vector) or SCALAR (b[0]). OP and BCAST are pipeline constants so each
// variant compiles to straight-line code. The *4 entry points handle four elements per
// invocation (vec4 loads and stores, ~2x faster on llvmpipe); they need n and (for row/column
// broadcasts) cols to be multiples of 4. The op table is written once, on vec4s.
// accumulate / accumulate4 add op(a, b) into out (out += op(a, b)), the same roundings as a
// separate add of the op's result.
// Tensors larger than one binding are processed in chunks: n is the chunk's length and offset the
// index of its first element in the whole tensor (row/column broadcasts index b by it).
struct Params { n: u32, cols: u32, offset: u32, _pad: u32, alpha: f32, beta: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// In-place and vec4 views of the same bindings (WebGPU forbids binding one buffer as both
// read-only and read-write, so in-place variants read and write `a` through one binding).
@group(0) @binding(1) var<storage, read_write> a_out: array<f32>;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> a_out4: array<vec4<f32>>;

override OP: u32 = 0u;
override BCAST: u32 = 0u;

fn b_at(i: u32) -> f32 {
  switch BCAST {
    case 0u: { return b[i]; }
    case 1u: { return b[(p.offset + i) % p.cols]; }
    case 2u: { return b[(p.offset + i) / p.cols]; }
    default: { return b[0]; }
  }
}

// b for elements 4i..4i+3 (row/column broadcasts: cols % 4 == 0, so they share a row).
fn b4_at(i: u32) -> vec4<f32> {
  let j = 4u * i;
  switch BCAST {
    case 0u: { return vec4<f32>(b[j], b[j + 1u], b[j + 2u], b[j + 3u]); }
    case 1u: {
      let c = (p.offset + j) % p.cols;
      return vec4<f32>(b[c], b[c + 1u], b[c + 2u], b[c + 3u]);
    }
    case 2u: { return vec4<f32>(b[(p.offset + j) / p.cols]); }
    default: { return vec4<f32>(b[0]); }
  }
}

fn apply(x: vec4<f32>, y: vec4<f32>) -> vec4<f32> {
  let zero = vec4<f32>(0.0);
  switch OP {
    case 0u: { return x + y; }
    case 1u: { return x - y; }
    case 2u: { return x * y; }
    case 3u: { return x / y; }
    // alpha*x + beta*y
    case 4u: { return p.alpha * x + p.beta * y; }
    // x where y > alpha, else 0 (ReLU/threshold backward, masks)
    case 5u: { return select(zero, x, y > vec4<f32>(p.alpha)); }
    // x * y * alpha
    case 6u: { return x * y * p.alpha; }
    // (x - y)^2
    case 7u: { let d = x - y; return d * d; }
    // alpha * (x - y): gradient of squared error
    case 8u: { return p.alpha * (x - y); }
    // x where y > alpha, else -inf (restricts a top-k to a masked subset)
    case 9u: { return select(vec4<f32>(bitcast<f32>(0xff800000u)), x, y > vec4<f32>(p.alpha)); }
    // max(x, 0) where y > alpha, else 0
    default: { return select(zero, max(x, zero), y > vec4<f32>(p.alpha)); }
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
  out[i] = apply(vec4<f32>(a[i]), vec4<f32>(b_at(i))).x;
}

@compute @workgroup_size(256)
fn in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  a_out[i] = apply(vec4<f32>(a_out[i]), vec4<f32>(b_at(i))).x;
}

@compute @workgroup_size(256)
fn main4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n / 4u) { return; }
  out4[i] = apply(a4[i], b4_at(i));
}

@compute @workgroup_size(256)
fn in_place4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n / 4u) { return; }
  a_out4[i] = apply(a_out4[i], b4_at(i));
}

@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  out[i] = out[i] + apply(vec4<f32>(a[i]), vec4<f32>(b_at(i))).x;
}

@compute @workgroup_size(256)
fn accumulate4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n / 4u) { return; }
  out4[i] = out4[i] + apply(a4[i], b4_at(i));
}
