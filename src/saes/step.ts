/**
 * The training step every architecture shares: input centring, decoder-norm bookkeeping,
 * decoding, the MSE loss and the backward pass through the decoder and the encoder's linear
 * map. An architecture supplies only its encode, its extra losses and their gradients.
 *
 * Gradients are hand-written and accumulated into `grads` (one tensor per parameter, SAELens
 * names). Everything is recorded into the GPU's open command encoder: no sync happens here.
 */
import type { Tensor } from "../gpu/tensor.ts";
import { binary, unary } from "../kernels/elementwise.ts";
import { matmul } from "../kernels/matmul.ts";
import {
  compressSelection,
  type NonzeroBits,
  type SparseActs,
  sparseBackward,
  type SparseBackwardInputs,
  sparseFits,
} from "../kernels/sparse.ts";
import { matVecInto, reduceAll, reduceCols, reduceRows } from "../kernels/reduce.ts";
import { StagedRows } from "../kernels/texture_pack.ts";
import { normalizeInput, type RunTimeNormalization } from "./normalization.ts";

/** The parts of an SAE config the shared step reads. */
export interface StepConfig {
  d_in: number;
  d_sae: number;
  apply_b_dec_to_input: boolean;
  /** SAELens `normalize_activations`; run-time normalisation applies inside the step. */
  normalize_activations?: string;
}

/** What a training forward pass reports (SAELens `TrainStepOutput` names). */
export interface StepOutputs {
  hidden_pre: Tensor;
  /**
   * May be a getter that makes it on first read (the standard SAE's sparse step): read it while
   * the scope holding the step's results is open.
   */
  feature_acts: Tensor;
  sae_out: Tensor;
  /** Architecture-specific outputs (JumpReLU's `threshold`). */
  [extra: string]: Tensor;
}

/**
 * ReLU-family sparse steps run (in `auto` kernel mode) once the measured mean L0 is at most this
 * fraction of d_sae; dense GEMMs win above it on lavapipe.
 */
const RELU_SPARSE_MAX_DENSITY = 1 / 32;

/** Inputs of one step besides the parameters. */
export interface StepInput {
  /** The batch [B, d_in] as the SAE sees it (after any activation scaling). */
  x: Tensor;
  /** [d_sae] 1 for latents dead before this step, else 0. */
  deadMask: Tensor;
  /** Sparsity coefficients after warm-up, by SAELens coefficient name. */
  coefficients: Record<string, number>;
  /** What the last logged step measured, if any (picks kernel paths and their sizes). */
  measured?: Measured;
}

/** Measurements of a logged step that steer kernel choices (never the results). */
export interface Measured {
  /** Mean L0 / d_sae. */
  activeFraction: number;
  /** Latents counted dead after the step. */
  deadLatents: number;
}

export class TrainStep {
  readonly batch: number;
  /** norm_in(x) − b_dec (b_dec only when apply_b_dec_to_input). */
  readonly saeIn: Tensor;
  /** The run-time normalisation of x (identity unless configured). */
  readonly normalization: RunTimeNormalization;
  /** ‖W_dec[j]‖₂ per latent, computed on first use (a TopK SAE without rescaling never needs it). */
  private rowNorms?: Tensor;
  /** Gradient of the total loss per parameter, accumulated by the helpers below. */
  readonly grads: Record<string, Tensor> = {};
  /** Loss terms as [1] tensors, SAELens names; the total is their sum. */
  readonly losses: Record<string, Tensor> = {};
  /** dL/d‖W_dec[j]‖, folded into grads.W_dec by `finish()` once anything has used it. */
  private readonly normGrad: Tensor;
  private normGradUsed = false;
  /** A sparse backward folded the decoder-norm gradient into W_dec's: finish() has nothing to do. */
  private normGradFolded = false;
  private stagedWDec?: StagedRows;
  private stagedSaeIn?: StagedRows;
  /** feature_acts as lists, when a sparse step built them (`compressFeatures`). */
  featureLists?: SparseActs;

  constructor(
    readonly cfg: StepConfig,
    readonly params: Record<string, Tensor>,
    readonly input: StepInput,
  ) {
    const gpu = input.x.gpu;
    this.batch = input.x.rows;
    for (const [name, p] of Object.entries(params)) this.grads[name] = gpu.zeros(p.shape);
    this.normalization = normalizeInput(cfg.normalize_activations ?? "none", input.x);
    const normalized = this.normalization.input;
    this.saeIn = cfg.apply_b_dec_to_input
      ? binary("sub", normalized, params.b_dec, "perCol")
      : normalized;
    this.normGrad = gpu.zeros([cfg.d_sae]);
  }

  /**
   * W_dec and saeIn as texel rows for the sparse kernels, staged once per step: the forward and
   * backward read them unchanged (the optimizer comes after).
   */
  get wDecRows(): StagedRows {
    return this.stagedWDec ??= new StagedRows(this.params.W_dec, "step W_dec");
  }
  get saeInRows(): StagedRows {
    return this.stagedSaeIn ??= new StagedRows(this.saeIn, "step saeIn");
  }

  /** ‖W_dec[j]‖₂ for each latent, [d_sae]. */
  get decoderRowNorms(): Tensor {
    return this.rowNorms ??= unary("sqrt", reduceRows(this.params.W_dec, "sumSquares"));
  }

  /** dL/d‖W_dec[j]‖ ([d_sae]) to add to; taking it makes `finish()` fold it into W_dec. */
  get decoderNormGrad(): Tensor {
    if (this.normGradFolded) {
      throw new Error("TrainStep: the decoder-norm gradient was already folded into W_dec's");
    }
    this.normGradUsed = true;
    return this.normGrad;
  }

  get x(): Tensor {
    return this.input.x;
  }

  /**
   * The step's feature activations as row and latent lists (`compressSelection`), remembered so
   * the trainer counts firing latents from them instead of reading the dense matrix again.
   * `bits`: their nonzeros' masks when already made (then `values` need only agree with the
   * activations where those are nonzero: a ReLU's input will do).
   */
  compressFeatures(values: Tensor, capacity?: number, bits?: NonzeroBits): SparseActs {
    this.featureLists = compressSelection(values, capacity, undefined, bits);
    return this.featureLists;
  }

  /**
   * Whether to take an architecture's sparse path: never when forced dense, when its tensors do
   * not fit the sparse kernels (with `terms` decoder terms, Matryoshka's prefixes included) or
   * when the architecture rules it out (`possible`). ReLU-family
   * activations can be dense (`reluActivations`), so in `auto` mode they go sparse only while
   * the measured active fraction is low; top-k ones always can.
   */
  useSparse(
    { reluActivations, possible = true, terms = 1 }: {
      reluActivations: boolean;
      possible?: boolean;
      terms?: number;
    },
  ) {
    const gpu = this.x.gpu;
    const policy = gpu.sparseKernels;
    const { d_in: dIn, d_sae: dSae } = this.cfg;
    if (policy === "never" || !possible) return false;
    const limits = {
      maxBindingBytes: gpu.maxBindingBytes,
      maxTextureSide: gpu.limits.maxTextureDimension2D,
    };
    if (!sparseFits(limits, { rows: this.batch, dIn, dSae, terms })) return false;
    if (policy === "always" || !reluActivations) return true;
    const measured = this.input.measured?.activeFraction;
    return measured !== undefined && measured <= RELU_SPARSE_MAX_DENSITY;
  }

  /**
   * saeIn · W + bias (W defaults to W_enc); with `positiveMasks`, also the masks of its positive
   * entries (its ReLU's nonzeros, for `compressFeatures`).
   */
  encodeLinear(
    bias: Tensor,
    weight: Tensor = this.params.W_enc,
    positiveMasks?: NonzeroBits,
  ): Tensor {
    return matmul(this.saeIn, weight, { bias, positiveMasks });
  }

  /**
   * norm_out(acts · W_dec + b_dec), optionally dividing acts by the decoder row norms first
   * (SAELens `decode`: the output is in the raw input's space).
   */
  decode(acts: Tensor, divideByNorms = false): { out: Tensor; decoded: Tensor } {
    const decoded = divideByNorms ? binary("div", acts, this.decoderRowNorms, "perCol") : acts;
    return { out: this.decodeOutput(matmul(decoded, this.params.W_dec)), decoded };
  }

  /** norm_out(product + b_dec) for a decoder product computed in place or sparsely. */
  decodeOutput(product: Tensor): Tensor {
    binary("add", product, this.params.b_dec, "perCol", { out: product });
    return this.normalization.denormalize?.(product) ?? product;
  }

  /**
   * Adds `scale · mean_rows(Σ_d (out − target)²)` as loss `name` and returns its gradient
   * with respect to `out`. `scaleTensor` ([1], on the GPU) multiplies both when given.
   */
  squaredErrorLoss(
    name: string,
    out: Tensor,
    target: Tensor,
    scale = 1,
    scaleTensor?: Tensor,
  ): Tensor {
    const sum = reduceAll(binary("squaredDiff", out, target), "sum");
    let loss = unary("affine", sum, { alpha: scale / this.batch, beta: 0 });
    let grad = binary("scaledDiff", out, target, "full", { alpha: (2 * scale) / this.batch });
    if (scaleTensor) {
      loss = binary("mul", loss, scaleTensor, "scalar");
      grad = binary("mul", grad, scaleTensor, "scalar", { out: grad });
    }
    this.losses[name] = loss;
    return grad;
  }

  /**
   * Backward through `out = norm_out(decoded · W_dec + b_dec)`: accumulates W_dec and b_dec
   * gradients and returns dL/d(decoded).
   */
  decoderBackward(decoded: Tensor, dOut: Tensor): Tensor {
    const dPre = this.decodeOutputBackward(dOut);
    matmul(decoded, dPre, { transA: true, accumulateInto: this.grads.W_dec });
    return matmul(dPre, this.params.W_dec, { transB: true });
  }

  /** Backward through `decodeOutput`: accumulates b_dec's gradient, returns dL/d(product). */
  decodeOutputBackward(dOut: Tensor): Tensor {
    const dPre = this.normalization.denormalizeBackward?.(dOut) ?? dOut;
    binary("add", this.grads.b_dec, reduceCols(dPre), "full", { out: this.grads.b_dec });
    return dPre;
  }

  /**
   * Backward through `decoded = acts / ‖W_dec‖`: returns dL/d(acts) and records the
   * decoder-norm gradient −Σ_b dDecoded·acts/‖W_dec‖².
   */
  divideByNormsBackward(acts: Tensor, dDecoded: Tensor): Tensor {
    const norms = this.decoderRowNorms;
    const dActs = binary("div", dDecoded, norms, "perCol");
    const dn = reduceCols(binary("mul", dActs, acts));
    const dnScaled = binary("div", dn, norms);
    binary("axpby", this.decoderNormGrad, dnScaled, "full", {
      alpha: 1,
      beta: -1,
      out: this.decoderNormGrad,
    });
    return dActs;
  }

  /** Adds a gradient with respect to the decoder row norms ([d_sae]). */
  addDecoderNormGrad(dn: Tensor): void {
    binary("add", this.decoderNormGrad, dn, "full", { out: this.decoderNormGrad });
  }

  /**
   * An L1 penalty on non-negative activations weighted by decoder norms, from their column sums
   * ([d_sae]): l1_loss = scale · Σ_j ‖W_dec[j]‖ · colSums_j. Adds the decoder-norm gradient
   * scale · colSums and returns dL/df = scale · ‖W_dec[j]‖, one value per latent.
   */
  decoderWeightedL1(colSums: Tensor, scale: number): Tensor {
    const weighted = binary("mul", colSums, this.decoderRowNorms);
    this.losses.l1_loss = unary("affine", reduceAll(weighted.view([1, weighted.size])), {
      alpha: scale,
      beta: 0,
    });
    this.addDecoderNormGrad(unary("affine", colSums, { alpha: scale, beta: 0 }));
    return unary("affine", this.decoderRowNorms, { alpha: scale, beta: 0 });
  }

  /**
   * Backward through `pre = saeIn · weight + bias`: accumulates the bias gradient, the weight
   * gradient (into `weightGrad`, by default grads.W_enc) and b_dec's share through the
   * centring `saeIn = x − b_dec`.
   */
  encoderBackward(
    dPre: Tensor,
    biasName: string,
    weight: Tensor = this.params.W_enc,
    weightGrad: Tensor = this.grads.W_enc,
  ): void {
    matmul(this.saeIn, dPre, { transA: true, accumulateInto: weightGrad });
    this.encoderBiasBackward(reduceCols(dPre), biasName, weight);
  }

  /**
   * The bias part of `encoderBackward` given Σ_rows dPre: the bias gradient and b_dec's share
   * through the centring (sparse paths compute the weight gradient themselves).
   */
  encoderBiasBackward(dBias: Tensor, biasName: string, weight: Tensor = this.params.W_enc): void {
    binary("add", this.grads[biasName], dBias, "full", { out: this.grads[biasName] });
    if (this.cfg.apply_b_dec_to_input) {
      // d(saeIn) = dPre·Wᵀ and b_dec enters with a minus sign: Σ_rows dPre·Wᵀ = W·Σ_rows dPre.
      matVecInto(weight, dBias, this.grads.b_dec, -1, 1);
    }
  }

  /**
   * The sparse counterpart of decoderBackward + encoderBackward for compressed activations:
   * adds W_dec, encoder-weight (into `dWEnc`, by default grads.W_enc) and decoder-norm gradients
   * of the entries and their bias share into `dBEnc` (zero-initialised, [d_sae]; pass it to
   * encoderBiasBackward once every selection has added to it). `first`: nothing has reached
   * grads.W_dec or `dWEnc` in this step yet, so their gradients are stored rather than added.
   * `foldDecoderNorms` (with `first`): the decoder-norm gradient is final, and this call folds it
   * into the W_dec rows it stores instead of `finish()` doing it in a pass of its own.
   */
  sparseBackward(
    acts: SparseActs,
    inputs: Omit<SparseBackwardInputs, "wDec" | "saeIn">,
    { dBEnc, dWEnc = this.grads.W_enc, first = false, foldDecoderNorms = false }: {
      dBEnc: Tensor;
      dWEnc?: Tensor;
      first?: boolean;
      foldDecoderNorms?: boolean;
    },
  ): void {
    // With rescaled activations this call adds to the norms' gradient itself: it is not final.
    const fold = foldDecoderNorms && !inputs.norms && this.normGradUsed;
    const foldScale = fold ? this.normFoldScale() : undefined;
    sparseBackward(acts, { ...inputs, wDec: this.wDecRows, saeIn: this.saeInRows }, {
      dWDec: this.grads.W_dec,
      dWEnc,
      dBEnc,
      // The kernels add to the norms' gradient only when activations were divided by them.
      dNorms: inputs.norms ? this.decoderNormGrad : this.normGrad,
      overwrite: first,
      foldScale,
    });
    if (fold) this.normGradFolded = true;
  }

  /** Folds the decoder-norm gradient into W_dec: dW_dec[j] += dn_j · W_dec[j] / ‖W_dec[j]‖. */
  finish(): void {
    // Nothing depended on the norms, or a sparse backward folded them already: no pass over W_dec.
    if (!this.normGradUsed || this.normGradFolded) return;
    const perRow = this.normFoldScale();
    binary("mul", this.params.W_dec, perRow, "perRow", { out: this.grads.W_dec, accumulate: true });
  }

  /** dn_j / ‖W_dec[j]‖: d‖W_dec[j]‖/dW_dec[j] is W_dec[j] / ‖W_dec[j]‖. */
  private normFoldScale(): Tensor {
    return binary("div", this.normGrad, this.decoderRowNorms);
  }

  /** The sum of all loss terms ([1]). */
  totalLoss(): Tensor {
    const terms = Object.values(this.losses);
    let total = terms[0];
    for (const t of terms.slice(1)) total = binary("add", total, t);
    return total;
  }
}
