// GPU-side conditions without a readback: work that is only sometimes needed (AuxK's exact
// fallback when more latents are dead than it has dense slots for) is dispatched indirectly,
// with zero workgroups when it is not needed.
// grid_if_above: args = value[0] > limit ? [x, y, 1] : [0, 1, 1]   (dispatchWorkgroupsIndirect)
// value_if_at_most: out[0] = value[0] <= limit ? value[0] : 0
struct Params { x: u32, y: u32, _pad: u32, _pad2: u32, limit: f32, _pad3: f32, _pad4: f32, _pad5: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> value: array<f32>;
@group(0) @binding(2) var<storage, read_write> args: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(1)
fn grid_if_above() {
  let open = value[0] > p.limit;
  args[0] = select(0u, p.x, open);
  args[1] = select(1u, p.y, open);
  args[2] = 1u;
}

@compute @workgroup_size(1)
fn value_if_at_most() {
  out[0] = select(0.0, value[0], value[0] <= p.limit);
}
