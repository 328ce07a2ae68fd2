// Gathers and scatter-adds of whole rows or columns named by a list of indices (the first
// `count` entries of `list`, count = min(total[TOTAL_AT], slots); slots past it read and write
// nothing).
// Used to run AuxK as dense products over the dead latents only.
// gather_cols: out[r, c] = src[r, list[c]]       ([rows, slots] from [rows, width])
// gather_rows: out[c, i] = src[list[c], i]       ([slots, width] from [rows, width])
// scatter_add_rows: dst[list[c], i] += src[c, i]
// scatter_add_cols: dst[r, list[c]] += src[r, c]
// Gathers write `fill` in the slots past the count.
struct Params { rows: u32, width: u32, slots: u32, _u0: u32, fill: f32, _p0: f32, _p1: f32, _p2: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> list: array<u32>;
@group(0) @binding(2) var<storage, read> total: array<u32>;
@group(0) @binding(3) var<storage, read> src: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;

// Where `total` holds the count: a pipeline constant, so that each entry point's read of it,
// made before any branch, is one load for all SIMD lanes on llvmpipe (a per-lane loop otherwise).
override TOTAL_AT: u32 = 0u;

fn listed() -> u32 {
  return min(total[TOTAL_AT], p.slots);
}

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn gather_cols(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let count = listed();
  let e = flat(wid, nwg, lid);
  if (e >= p.rows * p.slots) { return; }
  let r = e / p.slots;
  let c = e % p.slots;
  dst[e] = select(p.fill, src[r * p.width + list[c]], c < count);
}

@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let count = listed();
  let e = flat(wid, nwg, lid);
  if (e >= p.slots * p.width) { return; }
  let c = e / p.width;
  let i = e % p.width;
  dst[e] = select(p.fill, src[list[c] * p.width + i], c < count);
}

@compute @workgroup_size(256)
fn scatter_add_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let count = listed();
  let e = flat(wid, nwg, lid);
  if (e >= p.slots * p.width) { return; }
  let c = e / p.width;
  if (c >= count) { return; }
  let at = list[c] * p.width + e % p.width;
  dst[at] = dst[at] + src[e];
}

@compute @workgroup_size(256)
fn scatter_add_cols(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let count = listed();
  let e = flat(wid, nwg, lid);
  if (e >= p.rows * p.slots) { return; }
  let c = e % p.slots;
  if (c >= count) { return; }
  let at = (e / p.slots) * p.width + list[c];
  dst[at] = dst[at] + src[e];
}
