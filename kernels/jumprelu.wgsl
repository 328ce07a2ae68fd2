// JumpReLU SAE (SAELens JumpReLUTrainingSAE). h = hidden_pre [rows, cols], t = threshold [cols]
// (= exp(log_threshold)), n = decoder row norms [cols], dead = dead-latent mask [cols] (0/1).
// forward:  f = h where h > t (strict), else 0. With SUPPORT it also writes the gradient
//   support: 1 where the backward reads dL/df (active, or inside the threshold's bandwidth
//   window), else 0: the entries the sparse step computes it for (one read of h for both).
// backward: one invocation per column, walking the rows in order (coalesced, like cols_main of
//   reduce.wgsl). Takes g = dL/df from the reconstruction and, per column, adds the sparsity
//   loss, its gradients, and optionally the pre-activation loss, with s = tanh_scale and
//   rect(z) = 1 if -0.5 < z < 0.5, z = (h - t) / bandwidth:
//   TANH = false ("step"): l0 = l0_scale · Σ (h > t); Step's backward gives no gradient to h,
//     only dt += -(1/bw)·rect·l0_scale.
//   TANH = true: l0 = l0_scale · Σ tanh(s·f·n); with d = l0_scale·s·(1 - tanh²):
//     g += d·n, dn += d·f.
//   JumpReLU's backward of the total g: dh = (h > t)·g, dt += -(t/bw)·rect·g.
//   PRE_ACT: pre = pre_scale · Σ relu(t - h)·dead·n, with dh -= pre_scale·dead·n,
//     dt += pre_scale·dead·n, dn += pre_scale·relu(t - h)·dead where t > h.
//   Writes dh over g, adds dt·t to d_log_t (d exp(x)/dx = exp(x)), and writes dn and the
//   per-column loss sums (already scaled) to col_out = [dn | l0 | pre].
// Tensors larger than one binding come in chunks. forward: n values from global element
// `offset`. backward: `rows` rows from global row `row0`, the first at h[shift] and g[shift];
// chunks after the first add their per-column sums into col_out.
struct Params {
  rows: u32, cols: u32, offset: u32, row0: u32, n: u32, shift: u32,
  bandwidth: f32, l0_scale: f32, tanh_scale: f32, pre_scale: f32,
}
@group(0) @binding(0) var<uniform> p: Params;
// Texels per row of flat staging textures (`flatTexels` in staging.ts), set by Gpu.kernel: a
// division by a pipeline constant compiles to a multiply, by a uniform to a scalar divide per lane.
override FLAT_WIDTH: u32;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> t: array<f32>;
@group(0) @binding(3) var<storage, read> norms: array<f32>;
@group(0) @binding(4) var<storage, read> dead: array<f32>;
// backward: dL/df in, dL/dh out.
@group(0) @binding(5) var<storage, read_write> g: array<f32>;
@group(0) @binding(6) var<storage, read_write> d_log_t: array<f32>;
@group(0) @binding(7) var<storage, read_write> col_out: array<f32>;
// forward writes the activations where backward's gradient lives.
@group(0) @binding(5) var<storage, read_write> acts: array<f32>;

override TANH: bool = false;
override PRE_ACT: bool = false;

override SUPPORT: bool = false;
// forward's support output (bound to a placeholder without SUPPORT).
@group(0) @binding(7) var<storage, read_write> support_out: array<f32>;

// forward_staged4 (cols % 4 == 0) takes four elements per invocation and reads h and the
// thresholds from flat staging textures (texel q at (q % FLAT_WIDTH, q / FLAT_WIDTH); `flatTexels` in
// staging.ts): llvmpipe runs a storage-buffer load whose address differs per lane as a
// scalar loop over the SIMD lanes, but gathers texel loads. It writes through vec4 views; the
// scalar entry point runs the same vec4 functions on one lane.
@group(0) @binding(5) var<storage, read_write> acts4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> support_out4: array<vec4<f32>>;
@group(0) @binding(8) var h_in: texture_storage_2d<rgba32float, read>;
@group(0) @binding(9) var t_in: texture_storage_2d<rgba32float, read>;

fn kept(x: vec4<f32>, tc: vec4<f32>) -> vec4<f32> {
  return select(vec4<f32>(0.0), x, x > tc);
}

fn support(x: vec4<f32>, tc: vec4<f32>) -> vec4<f32> {
  let z = (x - tc) / p.bandwidth;
  return select(vec4<f32>(0.0), vec4<f32>(1.0), (x > tc) | ((z > vec4<f32>(-0.5)) & (z < vec4<f32>(0.5))));
}

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
  return (wid.y * nwg.x + wid.x) * 256u + lid;
}

// include quotient

fn texel(q: u32) -> vec2<u32> {
  return vec2<u32>(q % FLAT_WIDTH, q / FLAT_WIDTH);
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
  let i = flat(wid, nwg, lid);
  if (i >= p.n) { return; }
  let x = vec4<f32>(h[i]);
  let tc = vec4<f32>(t[(p.offset + i) % p.cols]);
  acts[i] = kept(x, tc).x;
  if (SUPPORT) { support_out[i] = support(x, tc).x; }
}

// Elements 4i .. 4i+3 of the run from element `offset` (cols % 4 == 0, so they share a row).
@compute @workgroup_size(256)
fn forward_staged4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
  let i = flat(wid, nwg, lid);
  if (i >= p.n / 4u) { return; }
  let x = textureLoad(h_in, texel(i));
  let tc = textureLoad(t_in, texel(remainder(p.offset + 4u * i, p.cols) / 4u));
  acts4[i] = kept(x, tc);
  if (SUPPORT) { support_out4[i] = support(x, tc); }
}

// tanh without the overflow of (e^x - e^-x)/(e^x + e^-x) or its cancellation near 0.
fn stable_tanh(x: f32) -> f32 {
  let a = abs(x);
  if (a < 0.05) {
    let x2 = x * x;
    return x * (1.0 - x2 * (1.0 / 3.0 - x2 * (2.0 / 15.0)));
  }
  let e = exp(-2.0 * a);
  return sign(x) * (1.0 - e) / (1.0 + e);
}

// Per-column sums of the backward.
struct ColumnSums { dt: f32, dn: f32, l0: f32, pre: f32 }

// The backward at element i of column c (threshold tc, norm nc, dead flag dc): overwrites g[i]
// with dL/dh and adds the element's terms to `sums`.
fn backward_at(i: u32, tc: f32, nc: f32, dc: f32, sums: ptr<function, ColumnSums>) {
  let x = h[i];
  let on = x > tc;
  var gv = g[i];
  if (TANH) {
    let f = select(0.0, x, on);
    let th = stable_tanh(p.tanh_scale * f * nc);
    (*sums).l0 += th;
    let d = p.l0_scale * (1.0 - th * th) * p.tanh_scale;
    gv += d * nc;
    (*sums).dn += d * f;
  } else {
    (*sums).l0 += select(0.0, 1.0, on);
  }
  let z = (x - tc) / p.bandwidth;
  if (z > -0.5 && z < 0.5) {
    (*sums).dt += -(tc / p.bandwidth) * gv;
    if (!TANH) { (*sums).dt += -(1.0 / p.bandwidth) * p.l0_scale; }
  }
  var dh = select(0.0, gv, on);
  if (PRE_ACT) {
    let gap = tc - x;
    if (gap > 0.0) {
      let w = dc * nc;
      (*sums).pre += gap * w;
      dh -= p.pre_scale * w;
      (*sums).dt += p.pre_scale * w;
      (*sums).dn += p.pre_scale * gap * dc;
    }
  }
  g[i] = dh;
}

fn write_column(c: u32, tc: f32, sums: ColumnSums) {
  d_log_t[c] += sums.dt * tc;
  let later = p.row0 > 0u;
  col_out[c] = sums.dn + select(0.0, col_out[c], later);
  col_out[p.cols + c] = p.l0_scale * sums.l0 + select(0.0, col_out[p.cols + c], later);
  col_out[2u * p.cols + c] = p.pre_scale * sums.pre + select(0.0, col_out[2u * p.cols + c], later);
}

@compute @workgroup_size(256)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.cols) { return; }
  let tc = t[c];
  var sums = ColumnSums();
  for (var r = 0u; r < p.rows; r++) {
    backward_at(p.shift + r * p.cols + c, tc, norms[c], dead[c], &sums);
  }
  write_column(c, tc, sums);
}

// backward over the rows of each column's latent list (`support_offsets` [cols + 1], rows in
// `support_rows`), in row order: where the step's dL/df and every term of the losses can be
// nonzero (forward's SUPPORT output; without PRE_ACT, whose terms reach every element below the
// threshold). The dense walk adds exactly zero elsewhere, so the sums are the same bit for bit;
// g is left untouched off the lists (zero there). Whole matrices, no chunks.
@group(0) @binding(8) var<storage, read> support_offsets: array<u32>;
@group(0) @binding(9) var<storage, read> support_rows: array<u32>;

@compute @workgroup_size(64)
fn backward_lists(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.cols) { return; }
  let tc = t[c];
  var sums = ColumnSums();
  for (var e = support_offsets[c]; e < support_offsets[c + 1u]; e++) {
    backward_at(support_rows[e] * p.cols + c, tc, norms[c], dead[c], &sums);
  }
  write_column(c, tc, sums);
}
