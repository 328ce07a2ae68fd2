// Global gradient-norm clipping as torch.nn.utils.clip_grad_norm_: the total norm is the 2-norm
// of the per-parameter 2-norms; scale = min(1, max_norm / (total + 1e-6)).
// finish: sum_squares[i] holds Σg² of parameter i; writes result = [total_norm, scale].
struct Params { count: u32, _pad: u32, max_norm: f32, _pad2: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> sum_squares: array<f32>;
@group(0) @binding(2) var<storage, read_write> result: array<f32>;

@compute @workgroup_size(1)
fn finish() {
  var total = 0.0;
  for (var i = 0u; i < p.count; i++) {
    let norm = sqrt(sum_squares[i]);
    total += norm * norm;
  }
  let norm = sqrt(total);
  result[0] = norm;
  result[1] = min(1.0, p.max_norm / (norm + 1e-6));
}
