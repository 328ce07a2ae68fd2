// BatchTopK's running threshold (SAELens update_topk_threshold, no grad):
//   if any act > 0: t = (1 - lr) * t + lr * min(acts[acts > 0])
// partial_minima: each workgroup takes the minimum positive value of SPAN·256 activations into
//   partials[partial0 + workgroup] (NONE when it has none); chunks of activations larger than one
//   binding write their own ranges of partials.
// update_threshold: one workgroup reduces the n partial minima and updates the threshold.
// A minimum does not depend on the order it is taken in, so the result equals a one-pass minimum.
struct Params { n: u32, partial0: u32, lr: f32, _pad: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> acts: array<f32>;
@group(0) @binding(2) var<storage, read_write> threshold: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
// partial_minima_staged reads the activations staged whole (`wholeTexels` in staging.ts).
@group(0) @binding(4) var acts_in: texture_storage_2d<rgba32float, read>;
// Texels per row of flat staging textures (`flatTexels` in staging.ts), set by Gpu.kernel: a
// division by a pipeline constant compiles to a multiply, by a uniform to a scalar divide per lane.
override FLAT_WIDTH: u32;

const WG = 256u;
const SPAN = 64u;     // values per invocation in partial_minima
const NONE = 3.0e38;  // above any activation: "no positive value seen"
var<workgroup> scratch: array<f32, WG>;

// Minimum of `m` over the workgroup (every invocation must call it: it has barriers).
fn workgroup_min(lid: u32, m: f32) -> f32 {
  scratch[lid] = m;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { scratch[lid] = min(scratch[lid], scratch[lid + stride]); }
    workgroupBarrier();
  }
  return scratch[0];
}

@compute @workgroup_size(256)
fn partial_minima(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let start = wid.x * WG * SPAN + lid;
  var m = NONE;
  for (var t = 0u; t < SPAN; t++) {
    let i = start + t * WG;
    if (i < p.n) {
      let v = acts[i];
      if (v > 0.0) { m = min(m, v); }
    }
  }
  let total = workgroup_min(lid, m);
  if (lid == 0u) { partials[p.partial0 + wid.x] = total; }
}

// partial_minima over the same SPAN·256 values per workgroup, read as texels (n % 4 == 0), a
// quad per load: llvmpipe runs a storage-buffer load whose address differs per lane as a
// scalar loop over the SIMD lanes. BatchTopK at the reference shape: 56 -> 16 ms, plus the copy.
@compute @workgroup_size(256)
fn partial_minima_staged(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
  let start = wid.x * WG * (SPAN / 4u) + lid;
  var m = vec4<f32>(NONE);
  for (var t = 0u; t < SPAN / 4u; t++) {
    let q = start + t * WG;
    if (4u * q < p.n) {
      let v = textureLoad(acts_in, vec2<u32>(q % FLAT_WIDTH, q / FLAT_WIDTH));
      m = min(m, select(vec4<f32>(NONE), v, v > vec4<f32>()));
    }
  }
  let total = workgroup_min(lid, min(min(m.x, m.y), min(m.z, m.w)));
  if (lid == 0u) { partials[p.partial0 + wid.x] = total; }
}

@compute @workgroup_size(256)
fn update_threshold(@builtin(local_invocation_index) lid: u32) {
  var m = NONE;
  for (var i = lid; i < p.n; i += WG) { m = min(m, partials[i]); }
  let total = workgroup_min(lid, m);
  if (lid == 0u && total < NONE) {
    threshold[0] = (1.0 - p.lr) * threshold[0] + p.lr * total;
  }
}
