// Top-k of every row for small k, one invocation per row: the row is walked once, its SCAN_K
// largest elements kept in registers as (key, index) pairs ordered by key descending, then index
// ascending. The selection equals topk_select.wgsl's (same order-preserving keys, exactly k kept,
// ties with the k-th value to the lowest indices) without its radix passes, whose workgroup
// barriers and 256-bin histograms dominate on rows of a few thousand elements or fewer.
// SCAN_K (>= k) is a compile-time length: the host picks the source with the smallest that fits
// (wgsl(name, { SCAN_K })). Kept values are written into `out`, zeroed by the host.
// Tensors larger than one binding come in chunks of whole rows from element `offset`.
struct Params { segments: u32, seg_len: u32, k: u32, _pad: u32, offset: u32, _pad2: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// Optional data-dependent k (e.g. the number of dead latents): k = min(p.k, u32(k_limit[0])).
@group(0) @binding(5) var<storage, read> k_limit: array<f32>;

override K_FROM_BUFFER: bool = false;
override RELU_OUTPUT: bool = true;

const SCAN_K = 8u;
const ROWS_PER_WORKGROUP = 64u;
// Below every float's key: the empty slots.
const NO_KEY = 0u;
const NO_INDEX = 0xffffffffu;

// Larger floats map to larger unsigned keys (as in topk_select.wgsl).
fn key_of(v: f32) -> u32 {
  let bits = bitcast<u32>(v);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

fn value_of(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}

@compute @workgroup_size(ROWS_PER_WORKGROUP)
fn select_rows_scan(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let row = (wid.y * nwg.x + wid.x) * ROWS_PER_WORKGROUP + lid;
  if (row >= p.segments) { return; }
  let base = p.offset + row * p.seg_len;
  var key_{m} = NO_KEY;  // unroll m<SCAN_K
  var index_{m} = NO_INDEX;  // unroll m<SCAN_K
  // The last slot's key: later elements enter only above it (equal keys keep the earlier index).
  var floor_key = NO_KEY;
  for (var j = 0u; j < p.seg_len; j++) {
    var key = key_of(values[base + j]);
    if (key > floor_key) {
      // Insertion: the carried pair moves past every slot it ranks after and swaps with the
      // first it ranks before; the displaced pair carries on (the last one drops out).
      var index = j;
      let ahead_{m} = key > key_{m} || (key == key_{m} && index < index_{m}); let held_key_{m} = key_{m}; let held_index_{m} = index_{m}; key_{m} = select(key_{m}, key, ahead_{m}); index_{m} = select(index_{m}, index, ahead_{m}); key = select(key, held_key_{m}, ahead_{m}); index = select(index, held_index_{m}, ahead_{m});  // unroll m<SCAN_K
      floor_key = key_{m};  // unroll m<SCAN_K
    }
  }
  var k = p.k;
  if (K_FROM_BUFFER) { k = min(k, u32(k_limit[0])); }
  if ({m}u < k && index_{m} != NO_INDEX) { let v = value_of(key_{m}); out[base + index_{m}] = select(v, max(v, 0.0), RELU_OUTPUT); }  // unroll m<SCAN_K
}
