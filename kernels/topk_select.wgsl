// Exact k-th largest value per segment by 4-pass radix select on order-preserving u32 keys,
// then a mask/apply pass. A segment is one row (TopK: k per row) or the whole batch (BatchTopK:
// int(k * rows) over all values). Counting uses integer atomics, so results are deterministic.
// Exactly k values are kept: when several elements equal the k-th value, four more radix passes
// over their (inverted) indices keep the lowest-indexed ones, so sparse consumers can size their
// buffers at k per segment. Those passes do no work unless such a tie exists.
// Tensors larger than one binding come in chunks (whole rows, or a slice of the one batch-wide
// segment): `values` and `out` are bound from an aligned offset and the chunk starts at `offset`.
struct Params { segments: u32, seg_len: u32, k: u32, pass_index: u32, offset: u32, index0: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> hist: array<atomic<u32>>;
// [segments * 6]: value prefix, remaining, k, tie (index) prefix, tie remaining, tie needed.
@group(0) @binding(3) var<storage, read_write> state: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// Optional data-dependent k (e.g. the number of dead latents): k = min(p.k, u32(k_limit[0])).
@group(0) @binding(5) var<storage, read> k_limit: array<f32>;

override K_FROM_BUFFER: bool = false;
override RELU_OUTPUT: bool = true;

const ITEMS = 16u;   // values per invocation per histogram workgroup
const S = 6u;        // state words per segment
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
    state[S * i] = 0u;
    state[S * i + 1u] = k;
    state[S * i + 2u] = k;
    state[S * i + 3u] = 0u;
    state[S * i + 4u] = 0u;
    state[S * i + 5u] = 0u;
  }
}

// Passes 0-3 fix the k-th value's key 8 bits at a time; passes 4-7 do the same over the
// inverted indices of the elements equal to it (larger key = lower index).
@compute @workgroup_size(256)
fn histogram(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  atomicStore(&local_hist[lid], 0u);
  workgroupBarrier();
  let seg = wid.y;
  let tie_pass = p.pass_index >= 4u;
  let digit = p.pass_index % 4u;
  let shift = 24u - 8u * digit;
  // Bits already fixed by earlier passes of this kind; none on the first.
  let fixed_mask = select(0u, 0xffffffffu << (shift + 8u), digit > 0u);
  let threshold = state[S * seg];
  let prefix = select(threshold, state[S * seg + 3u], tie_pass);
  let counting = !tie_pass || state[S * seg + 5u] != 0u;
  let base = p.offset + seg * p.seg_len;
  let start = wid.x * 256u * ITEMS + lid;
  for (var t = 0u; counting && t < ITEMS; t++) {
    let j = start + t * 256u;
    if (j < p.seg_len) {
      let value_key = key_of(values[base + j]);
      let key = select(value_key, ~(p.index0 + j), tie_pass);
      if ((key & fixed_mask) == (prefix & fixed_mask) && (!tie_pass || value_key == threshold)) {
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
  let tie_pass = p.pass_index >= 4u;
  let shift = 24u - 8u * (p.pass_index % 4u);
  let slot = select(0u, 3u, tie_pass);
  var remaining = state[S * seg + slot + 1u];
  var prefix = state[S * seg + slot];
  var covering = 0u;
  for (var b = 255i; b >= 0i; b--) {
    let c = atomicLoad(&hist[seg * 256u + u32(b)]);
    if (c >= remaining) {
      prefix = prefix | (u32(b) << shift);
      covering = c;
      break;
    }
    remaining -= c;
  }
  state[S * seg + slot] = prefix;
  state[S * seg + slot + 1u] = remaining;
  if (p.pass_index == 3u) {
    // The last value pass: `covering` elements equal the k-th value and `remaining` are kept.
    state[S * seg + 4u] = remaining;
    state[S * seg + 5u] = select(0u, 1u, covering > remaining);
  }
  for (var b = 0u; b < 256u; b++) { atomicStore(&hist[seg * 256u + b], 0u); }
}

// out = ReLU(v) (or v) for the segment's k largest values (ties by lowest index), else 0.
@compute @workgroup_size(256)
fn apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= p.segments * p.seg_len) { return; }
  let v = values[p.offset + i];
  let seg = i / p.seg_len;
  let key = key_of(v);
  let threshold = state[S * seg];
  let tie_kept = state[S * seg + 5u] == 0u || ~(p.index0 + i - seg * p.seg_len) >= state[S * seg + 3u];
  let selected = state[S * seg + 2u] > 0u && (key > threshold || (key == threshold && tie_kept));
  let kept = select(v, max(v, 0.0), RELU_OUTPUT);
  out[p.offset + i] = select(0.0, kept, selected);
}

// ---- select_rows: the whole selection of one row in one workgroup ------------------------------
// Per-row top-k with every pass in one dispatch: a workgroup walks its row once per radix pass,
// so after the first pass the row is read from cache rather than memory, and each digit is chosen
// in workgroup memory. Same keys, tie-break and output as the multi-dispatch path above.
var<workgroup> row_hist: array<atomic<u32>, 256>;
// [0] value prefix, [1] remaining, [2] covering (elements equal to the prefix), [3] k,
// [4] tie prefix, [5] tie remaining, [6] tie covering, [7] 1 when ties need breaking.
var<workgroup> row_state: array<u32, 8>;

// Invocation 0 picks the digit at `shift`: bins from the top until `remaining` are covered.
// `slot` is 0 for the value passes, 4 for the tie-break passes.
fn choose_digit(lid: u32, shift: u32, slot: u32) {
  if (lid == 0u) {
    var remaining = row_state[slot + 1u];
    var prefix = row_state[slot];
    var covering = 0u;
    for (var b = 255i; b >= 0i; b--) {
      let c = atomicLoad(&row_hist[u32(b)]);
      if (c >= remaining) {
        prefix = prefix | (u32(b) << shift);
        covering = c;
        break;
      }
      remaining -= c;
    }
    row_state[slot] = prefix;
    row_state[slot + 1u] = remaining;
    row_state[slot + 2u] = covering;
  }
}

// One radix digit over the row's candidates: value keys, or for the tie-break passes the
// inverted indices of the elements equal to `threshold`, that match the prefix fixed so far.
fn row_pass(lid: u32, base: u32, digit: u32, tie: bool, threshold: u32) {
  let slot = select(0u, 4u, tie);
  let prefix = workgroupUniformLoad(&row_state[slot]);
  atomicStore(&row_hist[lid], 0u);
  workgroupBarrier();
  let shift = 24u - 8u * digit;
  let fixed_mask = select(0u, 0xffffffffu << (shift + 8u), digit > 0u);
  for (var j = lid; j < p.seg_len; j += 256u) {
    let value_key = key_of(values[base + j]);
    let key = select(value_key, ~j, tie);
    if ((key & fixed_mask) == (prefix & fixed_mask) && (!tie || value_key == threshold)) {
      atomicAdd(&row_hist[(key >> shift) & 0xffu], 1u);
    }
  }
  workgroupBarrier();
  choose_digit(lid, shift, slot);
}

@compute @workgroup_size(256)
fn select_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  if (row >= p.segments) { return; }
  let base = p.offset + row * p.seg_len;
  if (lid == 0u) {
    var k = p.k;
    if (K_FROM_BUFFER) { k = min(k, u32(k_limit[0])); }
    row_state[0] = 0u;
    row_state[1] = k;
    row_state[3] = k;
    row_state[4] = 0u;
  }
  for (var digit = 0u; digit < 4u; digit++) { row_pass(lid, base, digit, false, 0u); }
  if (lid == 0u) {
    row_state[5] = row_state[1];
    row_state[7] = select(0u, 1u, row_state[2] > row_state[1]);
  }
  // Several elements equal the k-th value but only `remaining` of them fit: lowest indices win.
  let ties = workgroupUniformLoad(&row_state[7]) == 1u;
  let threshold = row_state[0];
  let k = row_state[3];
  if (ties) {
    for (var digit = 0u; digit < 4u; digit++) { row_pass(lid, base, digit, true, threshold); }
  }
  let tie_prefix = workgroupUniformLoad(&row_state[4]);
  for (var j = lid; j < p.seg_len; j += 256u) {
    let v = values[base + j];
    let key = key_of(v);
    let tie_kept = !ties || ~j >= tie_prefix;
    let selected = k > 0u && (key > threshold || (key == threshold && tie_kept));
    out[base + j] = select(0.0, select(v, max(v, 0.0), RELU_OUTPUT), selected);
  }
}
