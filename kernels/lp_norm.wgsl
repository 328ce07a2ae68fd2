// Row p-norms and their gradient, for the standard SAE's L1/Lp sparsity penalty
// mean_rows(‖v_r‖_p). p = 1 is special-cased: pow(0, 0) is undefined in WGSL.
// backward takes big tensors in chunks: n values starting at element `offset` of v.
struct Params { rows: u32, cols: u32, offset: u32, n: u32, p: f32, scale: f32 }
@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> v: array<f32>;
@group(0) @binding(2) var<storage, read> row_norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// finish_norm reads Σ|v|^p per row and writes its p-th root in place.
@group(0) @binding(1) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(256)
fn finish_norm(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x >= u.rows) { return; }
  sums[gid.x] = pow(sums[gid.x], 1.0 / u.p);
}

// out = scale · ∂‖v_r‖_p/∂v = scale · sign(v)|v|^(p-1) / ‖v_r‖^(p-1); 0 for an all-zero row.
@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
  let i = (wid.y * nwg.x + wid.x) * 256u + lid;
  if (i >= u.n) { return; }
  let x = v[i];
  let norm = row_norm[(u.offset + i) / u.cols];
  var g = 0.0;
  if (u.p == 1.0) {
    g = sign(x);
  } else if (norm > 0.0) {
    g = sign(x) * pow(abs(x), u.p - 1.0) / pow(norm, u.p - 1.0);
  }
  out[i] = u.scale * g;
}
