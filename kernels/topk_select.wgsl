// Exact k-th largest value per segment by 4-pass radix select on order-preserving u32 keys,
// then a mask/apply pass. A segment is one row (TopK: k per row) or the whole batch (BatchTopK:
// int(k * rows) over all values). Counting uses integer atomics, so results are deterministic.
// Exactly k values are kept: when several elements equal the k-th value, four more radix passes
// over their (inverted) indices keep the lowest-indexed ones, so sparse consumers can size their
// buffers at k per segment. Those passes do no work unless such a tie exists.
// Tensors larger than one binding come in chunks (whole rows, or a slice of the one batch-wide
// segment): `values` and `out` are bound from an aligned offset and the chunk starts at `offset`.
// With STAGED, values are read from a flat staging texture instead (`flatTexels` in
// staging.ts) that holds them from element `stage0` on, texel t at (t % FLAT_WIDTH, t / FLAT_WIDTH):
// llvmpipe runs a storage-buffer load whose address differs per lane as a scalar loop over the
// SIMD lanes, but gathers texel loads.
struct Params {
  segments: u32, seg_len: u32, k: u32, pass_index: u32, offset: u32, index0: u32,
  stage0: u32, slice_len: u32, mask_row0: u32, mask_rows: u32, mask_cols: u32, capacity: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
// Texels per row of flat staging textures (`flatTexels` in staging.ts), set by Gpu.kernel: a
// division by a pipeline constant compiles to a multiply, by a uniform to a scalar divide per lane.
override FLAT_WIDTH: u32;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read_write> hist: array<atomic<u32>>;
// [segments * 6]: value prefix, remaining, k, tie (index) prefix, tie remaining, tie needed.
@group(0) @binding(3) var<storage, read_write> state: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// Optional data-dependent k (e.g. the number of dead latents): k = min(p.k, u32(k_limit[0])).
@group(0) @binding(5) var<storage, read> k_limit: array<f32>;

@group(0) @binding(6) var values_in: texture_storage_2d<rgba32float, read>;
// With HAS_BOUND, bound_state[0] is a lower bound for the batch's k-th key (the state of a
// selection over slice maxima): the histogram passes skip elements below it. Every digit is
// chosen where the cumulative count from the top first reaches k, and all elements at or above
// the k-th value still count, so the choices do not change; only the atomics of the many small
// values go.
@group(0) @binding(7) var<storage, read> bound_state: array<u32>;
override HAS_BOUND: bool = false;
// With MASKS, select_rows and apply also set the bits of the nonzero values they write in masks
// of the whole [mask_rows, mask_cols] matrix, laid out as compress_bits (kernels/sparse.wgsl)
// makes them (zeroed by the host): the sparse step then need not read the selection again.
@group(0) @binding(8) var<storage, read_write> nonzero_by_row: array<atomic<u32>>;
@group(0) @binding(9) var<storage, read_write> nonzero_by_col: array<atomic<u32>>;
override MASKS: bool = false;
// With COMPACT, the batch-wide selection's first value pass also appends every value at or above
// the bound (a lower bound for the k-th value, so every kept value is one) to `batch_candidates`
// as (key, index): usually one to two times k. When they fit `p.capacity`, the remaining passes
// and the apply walk the candidates instead of the batch, each pass a full read of it otherwise;
// `candidate_dispatch` sizes both kinds of dispatch on the GPU, so that only one kind runs.
override COMPACT: bool = false;
@group(0) @binding(10) var<storage, read_write> batch_candidates: array<vec2<u32>>;
@group(0) @binding(11) var<storage, read_write> batch_candidate_count: array<atomic<u32>>;
@group(0) @binding(12) var<storage, read_write> batch_pass_args: array<u32>;   // [3]
@group(0) @binding(13) var<storage, read_write> batch_apply_args: array<u32>;  // [3]
@group(0) @binding(14) var<storage, read_write> candidate_args: array<u32>;    // [3]

// include quotient

fn mark_nonzero(row: u32, col: u32) {
  let row_words = (p.mask_cols + 31u) / 32u;
  let col_words = (p.mask_rows + 31u) / 32u;
  atomicOr(&nonzero_by_row[row * row_words + col / 32u], 1u << (col % 32u));
  atomicOr(&nonzero_by_col[col * col_words + row / 32u], 1u << (row % 32u));
}

override K_FROM_BUFFER: bool = false;
override RELU_OUTPUT: bool = true;
override STAGED: bool = false;

// Keys of elements j..j+3 (j a multiple of 4) of the segment (a row, or a chunk of the batch)
// starting at `base`. Past the segment's end the key is 0, below every float's: such padding
// never reaches a chosen digit, so it is never kept, and it raises no slice maximum. Staged
// values are whole texels (the host stages only rows of a multiple of 4, or a whole batch of a
// multiple of 4 values), so this is one texel load instead of four.
fn quad_keys(base: u32, j: u32) -> vec4<u32> {
  var keys = vec4<u32>();
  if (STAGED) {
    let t = (base + j - p.stage0) / 4u;
    let v = textureLoad(values_in, vec2<u32>(t % FLAT_WIDTH, t / FLAT_WIDTH));
    keys = vec4<u32>(key_of(v.x), key_of(v.y), key_of(v.z), key_of(v.w));
  } else {
    for (var c = 0u; c < 4u; c++) {
      if (j + c < p.seg_len) { keys[c] = key_of(values[base + j + c]); }
    }
  }
  return keys;
}

// Quads (4 values) per invocation per histogram workgroup (64 values; 16 values was ~20%
// slower: more global atomics).
const QUADS = 16u;
const S = 6u;        // state words per segment
var<workgroup> local_hist: array<atomic<u32>, 256>;

// Larger floats map to larger unsigned keys (negative floats have their bits flipped).
fn key_of(v: f32) -> u32 {
  let bits = bitcast<u32>(v);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

// The float a key came from (key_of is a bijection).
fn value_of(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
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
  if (COMPACT && i == 0u) { atomicStore(&batch_candidate_count[0], 0u); }
}

// What one histogram pass counts. Passes 0-3 fix the k-th value's key 8 bits at a time; passes
// 4-7 do the same over the inverted indices of the elements equal to it (larger key = lower
// index). Read before any branch (llvmpipe loads a constant address once only outside control
// flow).
struct HistPass {
  tie: bool,
  shift: u32,
  fixed_mask: u32,  // bits already fixed by earlier passes of this kind; none on the first
  threshold: u32,
  prefix: u32,
  counting: bool,
  bound: u32,
}

fn hist_pass(seg: u32) -> HistPass {
  let tie = p.pass_index >= 4u;
  let digit = p.pass_index % 4u;
  let shift = 24u - 8u * digit;
  let threshold = state[S * seg];
  return HistPass(
    tie,
    shift,
    select(0u, 0xffffffffu << (shift + 8u), digit > 0u),
    threshold,
    select(threshold, state[S * seg + 3u], tie),
    !tie || state[S * seg + 5u] != 0u,
    select(0u, bound_state[0], HAS_BOUND),
  );
}

// Adds element `index` (of the whole batch) with `key` to the workgroup's histogram if the pass
// counts it.
fn count_element(h: HistPass, key: u32, index: u32) {
  let counted = select(key, ~index, h.tie);
  let wanted = select(key >= h.bound, key == h.threshold, h.tie);
  if ((counted & h.fixed_mask) == (h.prefix & h.fixed_mask) && wanted) {
    atomicAdd(&local_hist[(counted >> h.shift) & 0xffu], 1u);
  }
}

fn flush_histogram(seg: u32, lid: u32) {
  let count = atomicLoad(&local_hist[lid]);
  if (count > 0u) { atomicAdd(&hist[seg * 256u + lid], count); }
}

fn append_candidate(key: u32, index: u32) {
  let at = atomicAdd(&batch_candidate_count[0], 1u);
  if (at < p.capacity) { batch_candidates[at] = vec2<u32>(key, index); }
}

@compute @workgroup_size(256)
fn histogram(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  atomicStore(&local_hist[lid], 0u);
  workgroupBarrier();
  let seg = wid.y;
  let h = hist_pass(seg);
  let compacting = COMPACT && p.pass_index == 0u;
  let base = p.offset + seg * p.seg_len;
  let start = wid.x * 256u * QUADS + lid;
  for (var t = 0u; h.counting && t < QUADS; t++) {
    let j = 4u * (start + t * 256u);
    if (j < p.seg_len) {
      let keys = quad_keys(base, j);
      for (var c = 0u; c < 4u && j + c < p.seg_len; c++) {
        count_element(h, keys[c], p.index0 + j + c);
        if (compacting && keys[c] >= h.bound) { append_candidate(keys[c], p.index0 + j + c); }
      }
    }
  }
  workgroupBarrier();
  flush_histogram(seg, lid);
}

// The histogram pass over the candidates (COMPACT; the batch is one segment): QUADS candidates
// per invocation, in the grid `candidate_dispatch` sized.
@compute @workgroup_size(256)
fn histogram_candidates(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
  atomicStore(&local_hist[lid], 0u);
  workgroupBarrier();
  let h = hist_pass(0u);
  let n = min(atomicLoad(&batch_candidate_count[0]), p.capacity);
  let start = wid.x * 256u * QUADS + lid;
  for (var t = 0u; h.counting && t < QUADS; t++) {
    let i = start + t * 256u;
    if (i < n) {
      let candidate = batch_candidates[i];
      count_element(h, candidate.x, candidate.y);
    }
  }
  workgroupBarrier();
  flush_histogram(0u, lid);
}

// After the first value pass of a compacting selection: when the candidates fit, the candidate
// passes get a grid for them and the batch-wide passes and apply, whose arguments the host wrote,
// get no workgroups; otherwise the candidate passes get none.
@compute @workgroup_size(1)
fn candidate_dispatch() {
  let n = atomicLoad(&batch_candidate_count[0]);
  let fits = n <= p.capacity;
  candidate_args[0] = select(0u, (n + 256u * QUADS - 1u) / (256u * QUADS), fits);
  candidate_args[1] = 1u;
  candidate_args[2] = 1u;
  if (fits) {
    batch_pass_args[0] = 0u;
    batch_apply_args[0] = 0u;
  }
}

// The largest value of each slice of slice_len values (a multiple of 4) of the one batch-wide
// segment: the k-th largest of these (k ≤ slices) bounds the batch's k-th value from below.
@compute @workgroup_size(256)
fn slice_maxima(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
  let slice = (wid.y * nwg.x + wid.x) * 256u + lid;
  let start = slice * p.slice_len;
  if (start >= p.seg_len) { return; }
  let end = min(start + p.slice_len, p.seg_len);
  var best = vec4<u32>();
  for (var j = start; j < end; j += 4u) { best = max(best, quad_keys(p.offset, j)); }
  out[slice] = value_of(max(max(best.x, best.y), max(best.z, best.w)));
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

// The batch-wide selection's verdict on element `index` with `key` (segment 0's state, read by
// the caller before any branch).
struct BatchChoice { threshold: u32, tie_prefix: u32, any_kept: bool, no_ties: bool }

fn batch_choice() -> BatchChoice {
  return BatchChoice(state[0], state[3], state[2] > 0u, state[5] == 0u);
}

fn batch_kept(choice: BatchChoice, key: u32, index: u32) -> bool {
  let tie_kept = choice.no_ties || ~index >= choice.tie_prefix;
  return choice.any_kept && (key > choice.threshold || (key == choice.threshold && tie_kept));
}

fn output_of(key: u32) -> f32 {
  let v = value_of(key);
  return select(v, max(v, 0.0), RELU_OUTPUT);
}

// Sets the mask bits of element e of the batch, one [mask_rows, mask_cols] matrix: (e / cols,
// e % cols).
fn mark_batch_element(e: u32) {
  let row = quotient(e, p.mask_cols);
  mark_nonzero(row, e - row * p.mask_cols);
}

// out = ReLU(v) (or v) for the batch's k largest values (ties by lowest index), else 0. Only
// the batch-wide selection uses these passes (one segment; per-row top-k is select_rows), so
// every element reads segment 0's state: no per-element division.
@compute @workgroup_size(256)
fn apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
  let choice = batch_choice();
  // Values 4q .. 4q + 3, read as one quad.
  let j = 4u * ((wid.y * nwg.x + wid.x) * 256u + lid);
  if (j >= p.seg_len) { return; }
  let keys = quad_keys(p.offset, j);
  var any_nonzero = false;
  for (var c = 0u; c < 4u && j + c < p.seg_len; c++) {
    let kept = select(0.0, output_of(keys[c]), batch_kept(choice, keys[c], p.index0 + j + c));
    out[p.offset + j + c] = kept;
    any_nonzero = any_nonzero || kept != 0.0;
  }
  // Marking is rare (k of the batch), so it runs apart from the loop above: with the atomics
  // inside it, apply took 63 ms at the reference shape, 49 like this (32 without masks).
  if (MASKS && any_nonzero) {
    for (var c = 0u; c < 4u && j + c < p.seg_len; c++) {
      if (out[p.offset + j + c] != 0.0) { mark_batch_element(p.index0 + j + c); }
    }
  }
}

// apply over the candidates (COMPACT): writes the kept ones into an output the host zeroed.
@compute @workgroup_size(256)
fn apply_candidates(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
  let choice = batch_choice();
  let n = min(atomicLoad(&batch_candidate_count[0]), p.capacity);
  let start = wid.x * 256u * QUADS + lid;
  for (var t = 0u; t < QUADS; t++) {
    let i = start + t * 256u;
    if (i < n) {
      let candidate = batch_candidates[i];
      if (batch_kept(choice, candidate.x, candidate.y)) {
        let kept = output_of(candidate.x);
        out[p.offset + candidate.y - p.index0] = kept;
        if (MASKS && kept != 0.0) { mark_batch_element(candidate.y); }
      }
    }
  }
}

// ---- select_rows: the whole selection of one row in one workgroup ------------------------------
// Per-row top-k in one dispatch, one workgroup per row. A prefilter finds a lower bound for the
// k-th value without touching the row more than once: each invocation takes the maxima of
// CHUNKS slices of its elements, and the k-th largest of those ROW_WG · CHUNKS maxima (its top
// 16 bits) is at most the row's k-th value (k slices each hold an element at least that large).
// Elements at or above the bound, usually one to two times k, are gathered into workgroup memory
// and the radix passes run there. When they do not fit (many equal values) the passes walk the
// row instead.
// Same keys, tie-break and output as the multi-dispatch path above.
// 64 invocations per row: the passes cost mostly their barriers, which fewer SIMD groups make
// cheaper (AuxK's [1024, 1984], k 384: 94 -> 70 ms against 256; the reference's [1024, 12288],
// k 64, with the prefilter: 320 -> 284 ms; 32 and 128 measured 276 and 305).
const ROW_WG = 64u;
// The host picks about 2k maxima (k ≤ ROW_WG · CHUNKS ≤ MAXIMA), the cheapest count measured:
// the reference's [1024, 12288], k 64, took 129 ms with 1024 maxima, 118 with 512, 107 with
// 128 and 120 with 64. More maxima tighten the bound, but each is counted twice.
override CHUNKS: u32 = 16u;
const MAXIMA = 1024u;
// The host turns the prefilter off when k > MAXIMA.
override PREFILTER: bool = true;
const CANDIDATES = 2048u;  // candidates kept in workgroup memory

var<workgroup> row_hist: array<atomic<u32>, 256>;
// [0] value prefix, [1] remaining, [2] covering (elements equal to the prefix), [3] k,
// [4] tie prefix, [5] tie remaining, [6] tie covering, [7] 1 when ties need breaking,
// [8] candidates found.
var<workgroup> row_state: array<u32, 9>;
var<workgroup> maxima: array<u32, MAXIMA>;
var<workgroup> candidate_key: array<u32, CANDIDATES>;
var<workgroup> candidate_index: array<u32, CANDIDATES>;
var<workgroup> candidate_count: atomic<u32>;

// What the radix passes walk: the row in memory, the gathered candidates, or the slice maxima.
const FROM_ROW = 0u;
const FROM_CANDIDATES = 1u;
const FROM_MAXIMA = 2u;

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

// Counts one element in the histogram of the current digit when it matches the prefix so far.
// Tie-break passes count the inverted indices of the elements equal to `threshold`.
fn tally(value_key: u32, index: u32, tie: bool, threshold: u32, prefix: u32, digit: u32) {
  let shift = 24u - 8u * digit;
  let fixed_mask = select(0u, 0xffffffffu << (shift + 8u), digit > 0u);
  let key = select(value_key, ~index, tie);
  if ((key & fixed_mask) == (prefix & fixed_mask) && (!tie || value_key == threshold)) {
    atomicAdd(&row_hist[(key >> shift) & 0xffu], 1u);
  }
}

// One radix digit over `source`'s elements (a loop per source: a branch inside the loop would be
// evaluated per element).
fn row_pass(lid: u32, base: u32, source: u32, count: u32, digit: u32, tie: bool, threshold: u32) {
  let slot = select(0u, 4u, tie);
  let prefix = workgroupUniformLoad(&row_state[slot]);
  for (var b = lid; b < 256u; b += ROW_WG) { atomicStore(&row_hist[b], 0u); }
  workgroupBarrier();
  if (source == FROM_ROW) {
    for (var q = lid; 4u * q < count; q += ROW_WG) {
      let keys = quad_keys(base, 4u * q);
      for (var c = 0u; c < 4u; c++) {
        tally(keys[c], 4u * q + c, tie, threshold, prefix, digit);
      }
    }
  } else if (source == FROM_CANDIDATES) {
    for (var i = lid; i < count; i += ROW_WG) {
      tally(candidate_key[i], candidate_index[i], tie, threshold, prefix, digit);
    }
  } else {
    for (var i = lid; i < count; i += ROW_WG) { tally(maxima[i], i, tie, threshold, prefix, digit); }
  }
  workgroupBarrier();
  choose_digit(lid, 24u - 8u * digit, slot);
}

// The k-th largest key of `source` into row_state[0], then (when several elements equal it and
// only some fit) the tie-break prefix into row_state[4]. Returns whether ties were broken.
fn radix_select(lid: u32, base: u32, source: u32, count: u32) -> bool {
  for (var digit = 0u; digit < 4u; digit++) { row_pass(lid, base, source, count, digit, false, 0u); }
  if (lid == 0u) {
    row_state[5] = row_state[1];
    row_state[7] = select(0u, 1u, row_state[2] > row_state[1]);
  }
  let ties = workgroupUniformLoad(&row_state[7]) == 1u;
  let threshold = row_state[0];
  if (ties) {
    for (var digit = 0u; digit < 4u; digit++) {
      row_pass(lid, base, source, count, digit, true, threshold);
    }
  }
  return ties;
}

@compute @workgroup_size(ROW_WG)
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
    atomicStore(&candidate_count, 0u);
  }
  if (PREFILTER) {
    // Slice maxima (key 0, below every float's key, for empty slices). Slices are made of
    // quads, 4 consecutive elements, read together.
    let quads = (p.seg_len + 3u) / 4u;
    let per_invocation = (quads + ROW_WG - 1u) / ROW_WG;
    let per_slice = (per_invocation + CHUNKS - 1u) / CHUNKS;
    for (var c = 0u; c < CHUNKS; c++) {
      var best = vec4<u32>();
      for (var m = c * per_slice; m < min((c + 1u) * per_slice, per_invocation); m++) {
        let q = lid + ROW_WG * m;
        if (q < quads) { best = max(best, quad_keys(base, 4u * q)); }
      }
      maxima[lid * CHUNKS + c] = max(max(best.x, best.y), max(best.z, best.w));
    }
    // The k-th largest maximum bounds the k-th value from below (k ≤ ROW_WG · CHUNKS), and so
    // do its top 16 bits: two radix digits give a bound barely looser than four, at half the
    // passes.
    for (var digit = 0u; digit < 2u; digit++) {
      row_pass(lid, base, FROM_MAXIMA, ROW_WG * CHUNKS, digit, false, 0u);
    }
    let bound = workgroupUniformLoad(&row_state[0]);
    for (var q = lid; q < quads; q += ROW_WG) {
      let keys = quad_keys(base, 4u * q);
      if (any(keys >= vec4<u32>(bound))) {
        for (var c = 0u; c < 4u; c++) {
          if (keys[c] >= bound) {
            let at = atomicAdd(&candidate_count, 1u);
            if (at < CANDIDATES) {
              candidate_key[at] = keys[c];
              candidate_index[at] = 4u * q + c;
            }
          }
        }
      }
    }
    workgroupBarrier();
    if (lid == 0u) {
      row_state[8] = atomicLoad(&candidate_count);
      row_state[0] = 0u;
      row_state[1] = row_state[3];
      row_state[4] = 0u;
    }
  } else if (lid == 0u) {
    row_state[8] = 0xffffffffu;
  }
  let found = workgroupUniformLoad(&row_state[8]);
  var ties: bool;
  if (found <= CANDIDATES) {
    ties = radix_select(lid, base, FROM_CANDIDATES, found);
  } else {
    ties = radix_select(lid, base, FROM_ROW, p.seg_len);
  }
  let threshold = workgroupUniformLoad(&row_state[0]);
  let tie_prefix = row_state[4];
  let k = row_state[3];
  if (found <= CANDIDATES) {
    // Every kept element is a candidate and the host zeroed `out`: write just those (a third
    // pass over the row cost about as much as the rest of the selection).
    for (var c = lid; c < found; c += ROW_WG) {
      let j = candidate_index[c];
      let key = candidate_key[c];
      let tie_kept = !ties || ~j >= tie_prefix;
      if (k > 0u && (key > threshold || (key == threshold && tie_kept))) {
        let v = value_of(key);
        let kept = select(v, max(v, 0.0), RELU_OUTPUT);
        out[base + j] = kept;
        if (MASKS && kept != 0.0) { mark_nonzero(p.mask_row0 + row, j); }
      }
    }
    return;
  }
  for (var q = lid; 4u * q < p.seg_len; q += ROW_WG) {
    let keys = quad_keys(base, 4u * q);
    for (var c = 0u; c < 4u && 4u * q + c < p.seg_len; c++) {
      let j = 4u * q + c;
      let v = value_of(keys[c]);
      let tie_kept = !ties || ~j >= tie_prefix;
      let selected = k > 0u && (keys[c] > threshold || (keys[c] == threshold && tie_kept));
      let kept = select(0.0, select(v, max(v, 0.0), RELU_OUTPUT), selected);
      out[base + j] = kept;
      if (MASKS && kept != 0.0) { mark_nonzero(p.mask_row0 + row, j); }
    }
  }
}
