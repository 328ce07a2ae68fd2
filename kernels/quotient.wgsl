// Included (`// include quotient`, see wgsl() in src/kernels/source.ts) by kernels that divide
// by a uniform per element.
//
// n / d for quotients below 2^22: an f32 estimate, off by at most one, corrected once. llvmpipe
// runs a u32 division by a uniform as a scalar divide per SIMD lane; these are vector operations.
fn quotient(n: u32, d: u32) -> u32 {
  let q = u32(f32(n) / f32(d));
  let r = bitcast<i32>(n - q * d);
  return select(select(q, q + 1u, r >= i32(d)), q - 1u, r < 0i);
}

// n % d, by the same means.
fn remainder(n: u32, d: u32) -> u32 {
  return n - quotient(n, d) * d;
}
