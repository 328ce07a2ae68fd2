// SAELens SAETrainer's per-latent bookkeeping and the statistics of its training log.
//
// update (one invocation per latent j, walking the rows of acts [rows, cols]; coalesced across j):
//   n_j = #rows with acts[r, j] != 0
//   act_freq[j] = (reset ? 0 : act_freq[j]) + n_j
//   passes[j]   = n_j > 0 ? 0 : passes[j] + 1        (n_forward_passes_since_fired)
//   dead[j]     = passes[j] > window ? 1 : 0         (dead_neurons, used by the next step)
// update_from_lists: the same, with n_j read from the latent lists of acts (offsets [cols + 1],
//   see sparse.wgsl) when the sparse step built them: no pass over acts.
// row_stats (one workgroup per row r), into stats[r] = [sse_r, tv_r, nnz_r]:
//   sse_r = sum_d (out[r,d] - x[r,d])^2,  tv_r = sum_d (x[r,d] - x_mean[d])^2,  nnz_r = #(acts[r,:] != 0)
// summarize (one workgroup), into metrics[offset .. offset+6]:
//   [l0, explained_variance, explained_variance_legacy, explained_variance_legacy_std,
//    dead_features, mean_passes_since_fired]
// Activations larger than one binding come in chunks of whole rows: `rows` rows from global row
// `row0`, the first at acts[shift]. update's flag: bit 0 reset, bit 1 a chunk after the first
// (continue the counts: no reset, no increment of passes, only clear it where the chunk fires).
struct Params {
  rows: u32, cols: u32, width: u32, flag: u32, row0: u32, shift: u32, _u0: u32, _u1: u32,
  window: f32, _p0: f32, _p1: f32, _p2: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> acts: array<f32>;
@group(0) @binding(2) var<storage, read_write> act_freq: array<f32>;
@group(0) @binding(3) var<storage, read_write> passes: array<f32>;
@group(0) @binding(4) var<storage, read_write> dead: array<f32>;
@group(0) @binding(5) var<storage, read> x: array<f32>;
@group(0) @binding(6) var<storage, read> out: array<f32>;
@group(0) @binding(7) var<storage, read> x_mean: array<f32>;
@group(0) @binding(8) var<storage, read_write> stats: array<f32>;
@group(0) @binding(9) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(10) var<storage, read> latent_offsets: array<u32>;

const WG = 256u;
var<workgroup> scratch: array<f32, WG>;

// Sum of `v` over the workgroup (every invocation must call it; all get the total).
fn workgroup_sum(v: f32, lid: u32) -> f32 {
  scratch[lid] = v;
  workgroupBarrier();
  for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) { scratch[lid] += scratch[lid + stride]; }
    workgroupBarrier();
  }
  let total = scratch[0];
  workgroupBarrier(); // scratch is reused by the next call
  return total;
}

// Folds latent j's firing count of this step (or chunk) into the counters.
fn record_firing(j: u32, n: u32) {
  let later = (p.flag & 2u) != 0u;
  let previous = select(act_freq[j], 0.0, p.flag == 1u);
  act_freq[j] = previous + f32(n);
  let since = select(select(passes[j] + 1.0, passes[j], later), 0.0, n > 0u);
  passes[j] = since;
  dead[j] = select(0.0, 1.0, since > p.window);
}

@compute @workgroup_size(256)
fn update(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  if (j >= p.cols) { return; }
  var n = 0u;
  for (var r = 0u; r < p.rows; r++) {
    if (acts[p.shift + r * p.cols + j] != 0.0) { n += 1u; }
  }
  record_firing(j, n);
}

@compute @workgroup_size(256)
fn update_from_lists(@builtin(global_invocation_id) gid: vec3<u32>) {
  let j = gid.x;
  if (j >= p.cols) { return; }
  record_firing(j, latent_offsets[j + 1u] - latent_offsets[j]);
}

// p.rows rows of x/out with p.width columns; acts has p.cols columns.
@compute @workgroup_size(256)
fn row_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
  let r = wid.y * nwg.x + wid.x;
  // Uniform control flow: every invocation reaches the barriers even past the last row.
  let valid = r < p.rows;
  var sse = 0.0;
  var tv = 0.0;
  var nnz = 0.0;
  if (valid) {
    let rx = p.row0 + r;
    for (var d = lid; d < p.width; d += WG) {
      let xv = x[rx * p.width + d];
      let err = out[rx * p.width + d] - xv;
      let centred = xv - x_mean[d];
      sse += err * err;
      tv += centred * centred;
    }
    for (var j = lid; j < p.cols; j += WG) {
      if (acts[p.shift + r * p.cols + j] != 0.0) { nnz += 1.0; }
    }
  }
  sse = workgroup_sum(sse, lid);
  tv = workgroup_sum(tv, lid);
  nnz = workgroup_sum(nnz, lid);
  if (lid == 0u && valid) {
    let rs = p.row0 + r;
    stats[3u * rs] = sse;
    stats[3u * rs + 1u] = tv;
    stats[3u * rs + 2u] = nnz;
  }
}

// p.rows rows of stats, p.cols latents; writes 6 values at metrics[p.flag].
@compute @workgroup_size(256)
fn summarize(@builtin(local_invocation_index) lid: u32) {
  let rows = f32(p.rows);
  var sse = 0.0;
  var tv = 0.0;
  var nnz = 0.0;
  var legacy = 0.0;
  for (var r = lid; r < p.rows; r += WG) {
    sse += stats[3u * r];
    tv += stats[3u * r + 1u];
    nnz += stats[3u * r + 2u];
    legacy += 1.0 - stats[3u * r] / stats[3u * r + 1u];
  }
  sse = workgroup_sum(sse, lid);
  tv = workgroup_sum(tv, lid);
  nnz = workgroup_sum(nnz, lid);
  let legacy_mean = workgroup_sum(legacy, lid) / rows;
  // Unbiased standard deviation (torch.std), second pass around the mean.
  var deviation = 0.0;
  for (var r = lid; r < p.rows; r += WG) {
    let d = (1.0 - stats[3u * r] / stats[3u * r + 1u]) - legacy_mean;
    deviation += d * d;
  }
  let legacy_var = workgroup_sum(deviation, lid) / (rows - 1.0);
  var n_dead = 0.0;
  var passes_sum = 0.0;
  for (var j = lid; j < p.cols; j += WG) {
    n_dead += dead[j];
    passes_sum += passes[j];
  }
  n_dead = workgroup_sum(n_dead, lid);
  passes_sum = workgroup_sum(passes_sum, lid);
  if (lid == 0u) {
    let o = p.flag;
    metrics[o] = nnz / rows;
    metrics[o + 1u] = 1.0 - (sse / rows) / (tv / rows);
    metrics[o + 2u] = legacy_mean;
    metrics[o + 3u] = sqrt(legacy_var);
    metrics[o + 4u] = n_dead;
    metrics[o + 5u] = passes_sum / f32(p.cols);
  }
}
