// BatchTopK's running threshold (SAELens update_topk_threshold, no grad):
//   if any act > 0: t = (1 - lr) * t + lr * min(acts[acts > 0])
// One workgroup: strided partial minima, then a tree in workgroup memory.
// Activations larger than one binding come in chunks of n values; flags: bit 0 continues the
// running minimum kept in `carry`, bit 1 marks the last chunk (the one that updates).
struct Params { n: u32, flags: u32, lr: f32, _pad2: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> acts: array<f32>;
@group(0) @binding(2) var<storage, read_write> threshold: array<f32>;
@group(0) @binding(3) var<storage, read_write> carry: array<f32>;

const WG = 256u;
const NONE = 3.0e38;  // above any activation: "no positive value seen"
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(256)
fn update_threshold(@builtin(local_invocation_index) lid: u32) {
  var m = select(NONE, carry[0], (p.flags & 1u) != 0u);
  for (var i = lid; i < p.n; i += WG) {
    let v = acts[i];
    if (v > 0.0) { m = min(m, v); }
  }
  partial[lid] = m;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] = min(partial[lid], partial[lid + stride]); }
    workgroupBarrier();
  }
  if (lid == 0u && (p.flags & 2u) == 0u) { carry[0] = partial[0]; }
  if (lid == 0u && (p.flags & 2u) != 0u && partial[0] < NONE) {
    threshold[0] = (1.0 - p.lr) * threshold[0] + p.lr * partial[0];
  }
}
