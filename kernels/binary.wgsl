// out[i] = op(a[i], b[...]) with b broadcast: FULL (same shape), PER_COL (b[j], a row vector),
// PER_ROW (b[r], a column vector) or SCALAR (b[0]). OP and BCAST are pipeline constants so each
// variant compiles to straight-line code. The op table is written once, on vec4s.
// accumulate / staged_accumulate4 add op(a, b) into out (out += op(a, b)), the same roundings as
// a separate add of the op's result.
// The staged*4 entry points handle four elements per invocation (n and, for row/column
// broadcasts, cols multiples of 4) and read a, a full or per-column b, and (accumulating) out
// from flat staging textures, texel t at (t % FLAT_WIDTH, t / FLAT_WIDTH) (`flatTexels` in
// staging.ts): llvmpipe runs each storage-buffer load as a scalar loop over SIMD lanes but
// gathers texel loads, and storage-buffer stores are cheap. Writing out through its buffer while
// reading a staged copy also makes in-place updates (out = a) need no variant of their own.
// Tensors larger than one binding or staging texture go in pieces: n is the piece's length and
// offset the index of its first element in the whole tensor (row/column broadcasts index b by it).
struct Params { n: u32, cols: u32, offset: u32, alpha: f32, beta: f32 }
// Texels per row of flat staging textures (`flatTexels` in staging.ts), set by Gpu.kernel: a
// division by a pipeline constant compiles to a multiply, by a uniform to a scalar divide per lane.
override FLAT_WIDTH: u32;
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// The in-place scalar variant reads and writes `a` through one binding (WebGPU forbids binding
// one buffer as both read-only and read-write); staged variants write through a vec4 view.
@group(0) @binding(1) var<storage, read_write> a_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(4) var a_in: texture_storage_2d<rgba32float, read>;
@group(0) @binding(5) var b_in: texture_storage_2d<rgba32float, read>;
@group(0) @binding(6) var out_in: texture_storage_2d<rgba32float, read>;

override OP: u32 = 0u;
override BCAST: u32 = 0u;

// include quotient

fn b_at(i: u32) -> f32 {
  switch BCAST {
    case 0u: { return b[i]; }
    case 1u: { return b[(p.offset + i) % p.cols]; }
    case 2u: { return b[(p.offset + i) / p.cols]; }
    default: { return b[0]; }
  }
}

fn texel(t: u32) -> vec2<u32> {
  return vec2<u32>(t % FLAT_WIDTH, t / FLAT_WIDTH);
}

// b for elements 4i..4i+3 (row/column broadcasts: cols % 4 == 0, so they share a row).
// `first` is b[0], read by the entry point before any branch: llvmpipe loads a constant address
// once for all SIMD lanes only outside control flow.
fn staged_b4(i: u32, first: f32) -> vec4<f32> {
  let j = 4u * i;
  switch BCAST {
    case 0u: { return textureLoad(b_in, texel(i)); }
    case 1u: { return textureLoad(b_in, texel(remainder(p.offset + j, p.cols) / 4u)); }
    case 2u: { return vec4<f32>(b[quotient(p.offset + j, p.cols)]); }
    default: { return vec4<f32>(first); }
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
fn staged4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  let first = b[0];
  if (i >= p.n / 4u) { return; }
  out4[i] = apply(textureLoad(a_in, texel(i)), staged_b4(i, first));
}

@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  if (i >= p.n) { return; }
  out[i] = out[i] + apply(vec4<f32>(a[i]), vec4<f32>(b_at(i))).x;
}

@compute @workgroup_size(256)
fn staged_accumulate4(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
  let i = index(wid, nwg, lid);
  let first = b[0];
  if (i >= p.n / 4u) { return; }
  let op = apply(textureLoad(a_in, texel(i)), staged_b4(i, first));
  out4[i] = textureLoad(out_in, texel(i)) + op;
}
