/**
 * SAELens's run-time activation normalisations (`normalize_activations`), applied inside the
 * SAE: `constant_norm_rescale` (rows scaled to norm √d_in, undone on the way out) and
 * `layer_norm` (centre and divide by the unbiased std + 1e-5 in; multiply by the std and add the
 * mean out, with no eps, so it is not an exact inverse). `none` and `expected_average_only_in`
 * (a trainer-side constant factor) are the identity here. The per-row factors depend only on x,
 * so gradients treat them as constants.
 */
import type { Tensor } from "../gpu/tensor.ts";
import { binary, unary } from "../kernels/elementwise.ts";
import { reduceRows } from "../kernels/reduce.ts";

export interface RunTimeNormalization {
  /** The normalised input the encoder sees. */
  input: Tensor;
  /** Maps decoder output back to input space (identity when absent). */
  denormalize?(y: Tensor): Tensor;
  /** Chain rule through `denormalize`: d(loss)/d(y) from d(loss)/d(denormalize(y)). */
  denormalizeBackward?(dOut: Tensor): Tensor;
  /** Intermediates SAELens exposes (`x_normalized`, `x_norm_coeff`, `ln_mu`, `ln_std`). */
  outputs: Record<string, Tensor>;
  /** The per-row tensors `denormalize` reads (to keep alive past a `gpu.scope`). */
  factors: Tensor[];
}

/** Normalises x [B, d_in] as `kind` says. */
export function normalizeInput(kind: string, x: Tensor): RunTimeNormalization {
  const d = x.cols;
  if (kind === "constant_norm_rescale") {
    const rowNorms = unary("sqrt", reduceRows(x, "sumSquares"));
    const coeff = unary("affine", unary("reciprocal", rowNorms), { alpha: Math.sqrt(d), beta: 0 });
    const input = binary("mul", x, coeff, "perRow");
    return {
      input,
      denormalize: (y) => binary("div", y, coeff, "perRow"),
      denormalizeBackward: (dOut) => binary("div", dOut, coeff, "perRow"),
      outputs: { x_normalized: input, x_norm_coeff: coeff.view([x.rows, 1]) },
      factors: [coeff],
    };
  }
  if (kind === "layer_norm") {
    const mean = unary("affine", reduceRows(x), { alpha: 1 / d, beta: 0 });
    const centred = binary("sub", x, mean, "perRow");
    const std = unary(
      "sqrt",
      unary("affine", reduceRows(centred, "sumSquares"), { alpha: 1 / (d - 1), beta: 0 }),
    );
    const input = binary("div", centred, unary("affine", std, { alpha: 1, beta: 1e-5 }), "perRow");
    return {
      input,
      denormalize: (y) => binary("add", binary("mul", y, std, "perRow"), mean, "perRow"),
      denormalizeBackward: (dOut) => binary("mul", dOut, std, "perRow"),
      outputs: {
        x_normalized: input,
        ln_mu: mean.view([x.rows, 1]),
        ln_std: std.view([x.rows, 1]),
      },
      factors: [mean, std],
    };
  }
  return { input: x, outputs: kind === "none" ? { x_normalized: x } : {}, factors: [] };
}
