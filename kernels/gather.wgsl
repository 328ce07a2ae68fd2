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

// Each invocation takes one column (`inner`, 256 per workgroup along x) of a strip of STRIP
// rows (`outer`, one strip per workgroup along y): no division per element, which llvmpipe
// runs as a scalar divide per lane when the divisor is a uniform, and one list read per strip
// where a column is listed.
const STRIP = 32u;

struct Span { inner: u32, outer0: u32, outer1: u32 }

fn span(wid: vec3<u32>, lid: u32, outer: u32) -> Span {
  let outer0 = wid.y * STRIP;
  return Span(wid.x * 256u + lid, outer0, min(outer0 + STRIP, outer));
}

@compute @workgroup_size(256)
fn gather_cols(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let count = listed();
  let s = span(wid, lid, p.rows);
  let c = s.inner;
  if (c >= p.slots) { return; }
  let listed_col = c < count;
  let col = select(0u, list[c], listed_col);
  for (var r = s.outer0; r < s.outer1; r++) {
    dst[r * p.slots + c] = select(p.fill, src[r * p.width + col], listed_col);
  }
}

@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let count = listed();
  let s = span(wid, lid, p.slots);
  let i = s.inner;
  if (i >= p.width) { return; }
  for (var c = s.outer0; c < s.outer1; c++) {
    let listed_row = c < count;
    let row = select(0u, list[c], listed_row);
    dst[c * p.width + i] = select(p.fill, src[row * p.width + i], listed_row);
  }
}

@compute @workgroup_size(256)
fn scatter_add_rows(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let count = listed();
  let s = span(wid, lid, min(p.slots, count));
  let i = s.inner;
  if (i >= p.width) { return; }
  for (var c = s.outer0; c < s.outer1; c++) {
    let at = list[c] * p.width + i;
    dst[at] = dst[at] + src[c * p.width + i];
  }
}

@compute @workgroup_size(256)
fn scatter_add_cols(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let count = listed();
  let s = span(wid, lid, p.rows);
  let c = s.inner;
  if (c >= count) { return; }
  let col = list[c];
  for (var r = s.outer0; r < s.outer1; r++) {
    let at = r * p.width + col;
    dst[at] = dst[at] + src[r * p.slots + c];
  }
}
