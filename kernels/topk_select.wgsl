// Exact k-th largest value per segment by 4-pass radix select on order-preserving u32 keys,
// then a mask/apply pass. A segment is one row (TopK: k per row) or the whole batch (BatchTopK:
// int(k * rows) over all values). Counting uses integer atomics, so results are deterministic.
// Elements equal to the k-th value are all kept (exact float ties are the only way to keep more
// than k; for BatchTopK the tied values are ReLU zeros, which change neither output nor gradient).
// Tensors larger than one binding come in chunks (whole rows, or a slice of the one batch-wide
// segment): `values` and `out` are bound from an aligned offset and the chunk starts at `offset`.
struct Params { segments: u32, seg_len: u32, k: u32, pass_index: u32, offset: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> hist: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> state: array<u32>;   // [segments * 3]: prefix, remaining, k
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// Optional data-dependent k (e.g. the number of dead latents): k = min(p.k, u32(k_limit[0])).
@group(0) @binding(5) var<storage, read> k_limit: array<f32>;

override K_FROM_BUFFER: bool = false;
override RELU_OUTPUT: bool = true;

const ITEMS = 16u;   // values per invocation per histogram workgroup
var<workgroup> local_hist: array<atomic<u32>, 256>;

// Larger floats map to larger unsigned keys (negative floats have their bits flipped).
fn key_of(v: f32) -> u32 {
  let bits = bitcast<u32>(v);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

@compute @workgroup_size(256)
fn init(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i < p.segments * 256u) { atomicStore(&hist[i], 0u); }
  if (i < p.segments) {
    var k = p.k;
    if (K_FROM_BUFFER) { k = min(k, u32(k_limit[0])); }
    state[3u * i] = 0u;
    state[3u * i + 1u] = k;
    state[3u * i + 2u] = k;
  }
}

@compute @workgroup_size(256)
fn histogram(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  atomicStore(&local_hist[lid], 0u);
  workgroupBarrier();
  let seg = wid.y;
  let shift = 24u - 8u * p.pass_index;
  // Bits already fixed by earlier passes; none on the first pass.
  let fixed_mask = select(0u, 0xffffffffu << (shift + 8u), p.pass_index > 0u);
  let prefix = state[3u * seg];
  let base = p.offset + seg * p.seg_len;
  let start = wid.x * 256u * ITEMS + lid;
  for (var t = 0u; t < ITEMS; t++) {
    let j = start + t * 256u;
    if (j < p.seg_len) {
      let key = key_of(values[base + j]);
      if ((key & fixed_mask) == (prefix & fixed_mask)) {
        atomicAdd(&local_hist[(key >> shift) & 0xffu], 1u);
      }
    }
  }
  workgroupBarrier();
  let count = atomicLoad(&local_hist[lid]);
  if (count > 0u) { atomicAdd(&hist[seg * 256u + lid], count); }
}

// One invocation per segment: walk bins from the top until `remaining` values are covered.
@compute @workgroup_size(64)
fn choose(@builtin(global_invocation_id) gid: vec3<u32>) {
  let seg = gid.x;
  if (seg >= p.segments) { return; }
  let shift = 24u - 8u * p.pass_index;
  var remaining = state[3u * seg + 1u];
  var prefix = state[3u * seg];
  for (var b = 255i; b >= 0i; b--) {
    let c = atomicLoad(&hist[seg * 256u + u32(b)]);
    if (c >= remaining) {
      prefix = prefix | (u32(b) << shift);
      break;
    }
    remaining -= c;
  }
  state[3u * seg] = prefix;
  state[3u * seg + 1u] = remaining;
  for (var b = 0u; b < 256u; b++) { atomicStore(&hist[seg * 256u + b], 0u); }
}

// out = ReLU(v) (or v) where v is at least the segment's k-th largest value, else 0.
@compute @workgroup_size(256)
fn apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.segments * p.seg_len) { return; }
  let v = values[p.offset + i];
  let seg = i / p.seg_len;
  let kept = select(v, max(v, 0.0), RELU_OUTPUT);
  out[p.offset + i] = select(0.0, kept, state[3u * seg + 2u] > 0u && key_of(v) >= state[3u * seg]);
}
