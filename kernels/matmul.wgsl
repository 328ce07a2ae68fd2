// C[M,N] = alpha * op(A) . op(B) (+ C when ACCUMULATE), row-major f32.
// op(A) is A[M,K], or A stored [K,M] when TRANS_A; op(B) is B[K,N], or B stored [N,K] when TRANS_B.
// Each invocation owns a TM x TN block of C held in registers; no workgroup memory (faster on
// Mesa's llvmpipe than shared-memory tiling, see PLATFORM.md). Reads past the edges are clamped
// and their results never stored, so any M, N, K works.
struct Params { M: u32, N: u32, K: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override ACCUMULATE: bool = false;
const TM = 4u;
const TN = 4u;

fn load_a(m: u32, k: u32) -> f32 {
  if (TRANS_A) { return A[k * p.M + m]; }
  return A[m * p.K + k];
}
fn load_b(k: u32, n: u32) -> f32 {
  if (TRANS_B) { return B[n * p.K + k]; }
  return B[k * p.N + n];
}

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * TM;
  let col0 = gid.x * TN;
  if (row0 >= p.M || col0 >= p.N) { return; }
  var rows: array<u32, TM>;
  var cols: array<u32, TN>;
  for (var i = 0u; i < TM; i++) { rows[i] = min(row0 + i, p.M - 1u); }
  for (var j = 0u; j < TN; j++) { cols[j] = min(col0 + j, p.N - 1u); }
  var acc: array<array<f32, TN>, TM>;
  for (var k = 0u; k < p.K; k++) {
    var a: array<f32, TM>;
    var b: array<f32, TN>;
    for (var i = 0u; i < TM; i++) { a[i] = load_a(rows[i], k); }
    for (var j = 0u; j < TN; j++) { b[j] = load_b(k, cols[j]); }
    for (var i = 0u; i < TM; i++) {
      for (var j = 0u; j < TN; j++) { acc[i][j] = acc[i][j] + a[i] * b[j]; }
    }
  }
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) {
      let r = row0 + i;
      let c = col0 + j;
      if (r < p.M && c < p.N) {
        var v = p.alpha * acc[i][j];
        if (ACCUMULATE) { v = C[r * p.N + c] + v; }
        C[r * p.N + c] = v;
      }
    }
  }
}
