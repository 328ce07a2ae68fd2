/**
 * SAELens's TopK auxiliary loss (AuxK), shared by the TopK family: the top k_aux = d_in // 2 raw
 * pre-activations among dead latents reconstruct the detached residual x − sae_out (with b_dec),
 * scaled by min(n_dead / k_aux, 1) · aux_loss_coefficient. n_dead stays on the GPU.
 *
 * The sparse step runs it over the dead latents only: the first `slots` dead latents (sized from
 * the dead count the last logged step measured) are selected from and decoded as dense products
 * over a compacted [batch, slots] matrix; when more are dead the exact selection over all
 * latents runs through the sparse kernels, so the result never depends on the measurement.
 */
import type { Tensor } from "../gpu/tensor.ts";
import { binary, unary } from "../kernels/elementwise.ts";
import {
  gatherCols,
  gatherRows,
  type IndexList,
  scatterAddCols,
  scatterAddRows,
} from "../kernels/gather.ts";
import { type Gate, valueIfClosed } from "../kernels/gate.ts";
import { type LiveCount, matmul } from "../kernels/matmul.ts";
import { reduceAll, reduceCols } from "../kernels/reduce.ts";
import {
  compressRows,
  compressSelection,
  type SparseActs,
  sparseDecode,
} from "../kernels/sparse.ts";
import { topkPerRowMasked, topkPerRowRaw } from "../kernels/topk.ts";
import type { TrainStep } from "./step.ts";
import type { TopKFamilyConfig } from "./topk.ts";

/** SAELens's k_aux = d_in // 2 (at most d_sae). */
function auxK(cfg: TopKFamilyConfig): number {
  return Math.min(Math.floor(cfg.d_in / 2), cfg.d_sae);
}

/**
 * Adds the AuxK loss of `recons` (nDead: [1], the dead-latent count); returns its gradient w.r.t.
 * the reconstruction.
 */
function auxKLoss(
  step: TrainStep,
  cfg: TopKFamilyConfig,
  recons: Tensor,
  saeOut: Tensor,
  nDead: Tensor,
): Tensor {
  const kAux = Math.floor(cfg.d_in / 2);
  const scale = unary("scaledMin", nDead, { alpha: 1 / kAux, beta: 1 });
  const residual = binary("sub", step.x, saeOut);
  return step.squaredErrorLoss(
    "auxiliary_reconstruction_loss",
    recons,
    residual,
    cfg.aux_loss_coefficient,
    scale,
  );
}

/** AuxK on the dense path; returns its gradient w.r.t. hiddenPre. */
export function denseAuxK(
  step: TrainStep,
  cfg: TopKFamilyConfig,
  hiddenPre: Tensor,
  saeOut: Tensor,
): Tensor {
  const rescale = cfg.rescale_acts_by_decoder_norm;
  const nDead = reduceAll(step.input.deadMask);
  // The top k_aux raw pre-activations among dead latents per row (all zero with none dead).
  const auxActs = topkPerRowMasked(hiddenPre, step.input.deadMask, auxK(cfg), nDead);
  const { out: recons, decoded } = step.decode(auxActs, rescale);
  const dRecons = auxKLoss(step, cfg, recons, saeOut, nDead);
  const dDecoded = step.decoderBackward(decoded, dRecons);
  const dAux = rescale ? step.divideByNormsBackward(auxActs, dDecoded) : dDecoded;
  return binary("maskGreater", dAux, unary("abs", auxActs), "full", { alpha: 0 });
}

/** The pre-activations AuxK selects from and the decoder norms when rescaling. */
export interface AuxKInputs {
  /** linear, times the decoder norms when rescaling. */
  hiddenPre: Tensor;
  /** saeIn · W_enc + b_enc. */
  linear: Tensor;
  /** Decoder row norms when activations are rescaled by them. */
  norms?: Tensor;
}

/**
 * AuxK on the sparse path: adds the loss and the W_dec, W_enc and decoder-norm gradients, and
 * b_enc's into `dBEnc` (passed to encoderBiasBackward by the caller).
 *
 * With slots, the selection itself runs over the compacted dead latents. When more latents are
 * dead than there are slots (known only on the GPU) the compact part selects nothing and the
 * exact selection over every latent runs through the lists instead: those dispatches are gated on
 * the GPU-side dead count, so they cost nothing otherwise.
 */
export function sparseAuxK(
  step: TrainStep,
  cfg: TopKFamilyConfig,
  inputs: AuxKInputs,
  saeOut: Tensor,
  dBEnc: Tensor,
): void {
  const slots = denseSlots(step, cfg);
  const nDead = reduceAll(step.input.deadMask);
  // The lists take what the slots cannot: everything without slots, else only on overflow.
  const gate = slots > 0 && slots < cfg.d_sae ? { value: nDead, limit: slots } : undefined;
  const dense = slots > 0 ? compactDead(step, cfg, inputs, slots, nDead, gate) : undefined;
  let rest: SparseActs | undefined;
  let product = dense?.product;
  if (!dense || gate) {
    const selected = topkPerRowMasked(
      inputs.hiddenPre,
      step.input.deadMask,
      auxK(cfg),
      nDead,
      gate,
    );
    rest = compressSelection(selected, step.batch * auxK(cfg), gate);
    const restProduct = sparseDecode(rest, step.wDecRows, { norms: inputs.norms });
    product = product ? binary("add", product, restProduct) : restProduct;
  }
  const dRecons = auxKLoss(step, cfg, step.decodeOutput(product!), saeOut, nDead);
  const dPre = step.decodeOutputBackward(dRecons);
  if (dense) compactBackward(step, dense, dPre, inputs.linear, dBEnc);
  if (rest) {
    const lists = {
      norms: inputs.norms,
      linearPre: inputs.linear,
      dPre: [dPre],
      widths: [cfg.d_sae],
    };
    step.sparseBackward(rest, lists, { dBEnc });
  }
}

/**
 * Slots for dead latents in the dense part: every latent when sparse kernels are forced (so
 * tests and parity cover it), else the last measured dead count with a margin, or none. Beyond
 * 256, whole multiples of 256 make the slot dimension of AuxK's GEMMs whole tiles, stored without
 * bounds checks (WHOLE_TILES in kernels/matmul.wgsl).
 */
function denseSlots(step: TrainStep, cfg: TopKFamilyConfig): number {
  if (step.x.gpu.sparseKernels === "always") return cfg.d_sae;
  const dead = step.input.measured?.deadLatents ?? 0;
  if (dead === 0) return 0;
  const wanted = dead * 1.25 + 16;
  // Small counts keep multiples of 64: 256 slots for a few dead latents made the default run's
  // steps half again as slow (every latent compacted at d_sae 256).
  const unit = wanted > 256 ? 256 : 64;
  return Math.min(cfg.d_sae, Math.ceil(wanted / unit) * unit);
}

/** AuxK's dense part: the dead latents' columns and decoder rows, compacted. */
interface CompactDead {
  dead: IndexList;
  /** [batch, slots] the listed dead latents' selected raw pre-activations. */
  acts: Tensor;
  /** acts, divided by the decoder norms when rescaling. */
  decoded: Tensor;
  /** [slots] decoder norms of the listed latents (1 past the count) when rescaling. */
  norms?: Tensor;
  /** [slots, d_in] their decoder rows. */
  wDec: Tensor;
  /** decoded · wDec, [batch, d_in]. */
  product: Tensor;
}

function compactDead(
  step: TrainStep,
  cfg: TopKFamilyConfig,
  inputs: AuxKInputs,
  slots: number,
  nDead: Tensor,
  gate?: Gate,
): CompactDead {
  const lists = compressRows(step.input.deadMask.view([1, cfg.d_sae]), slots);
  const dead = { list: lists.index, total: lists.offsets, totalAt: 1, slots };
  // The same top-k as over all latents: the listed ones are every dead latent (unless the gate
  // opens, when k is 0), in latent order, so ties still go to the lowest latent index.
  const candidates = gatherCols(inputs.hiddenPre, dead, -Infinity);
  const kLimit = gate ? valueIfClosed(gate) : nDead;
  const acts = topkPerRowRaw(candidates, Math.min(auxK(cfg), slots), kLimit);
  const norms = inputs.norms;
  const slotNorms = norms && gatherCols(norms.view([1, cfg.d_sae]), dead, 1).view([slots]);
  const decoded = slotNorms ? binary("div", acts, slotNorms, "perCol") : acts;
  const wDec = gatherRows(step.params.W_dec, dead);
  const product = matmul(decoded, wDec, { live: liveSlots(dead, "depth") });
  return { dead, acts, decoded, norms: slotNorms, wDec, product };
}

/**
 * The slots past the dead count hold zeros (gathered rows and columns are filled with zeros,
 * and top-k over -Infinity keeps none of them): the GEMMs over slots may skip them.
 */
function liveSlots(dead: IndexList, dim: LiveCount["dim"]): LiveCount {
  return { count: dead.total, at: dead.totalAt, dim };
}

/** Backward of the dense part, as the dense step does it, scattered back to the latents. */
function compactBackward(
  step: TrainStep,
  c: CompactDead,
  dPre: Tensor,
  linear: Tensor,
  dBEnc: Tensor,
): void {
  const perLatent = (v: Tensor) => v.view([1, v.size]);
  const dDecoded = matmul(dPre, c.wDec, { transB: true, live: liveSlots(c.dead, "cols") });
  let dActs = dDecoded;
  if (c.norms) {
    // decoded = acts / norm: −Σ_b dActs·acts / norm reaches the norm.
    dActs = binary("div", dDecoded, c.norms, "perCol");
    const dn = binary("div", reduceCols(binary("mul", dActs, c.acts)), c.norms);
    const dNorms = perLatent(step.decoderNormGrad);
    scatterAddCols(dNorms, perLatent(unary("affine", dn, { alpha: -1, beta: 0 })), c.dead);
  }
  let dLinear = binary("maskGreater", dActs, unary("abs", c.acts), "full", { alpha: 0 });
  if (c.norms) {
    // hidden = linear · norm.
    const slotLinear = gatherCols(linear, c.dead);
    const dNorms = perLatent(step.decoderNormGrad);
    scatterAddCols(dNorms, perLatent(reduceCols(binary("mul", dLinear, slotLinear))), c.dead);
    dLinear = binary("mul", dLinear, c.norms, "perCol");
  }
  const dWDec = matmul(c.decoded, dPre, { transA: true, live: liveSlots(c.dead, "rows") });
  scatterAddRows(step.grads.W_dec, dWDec, c.dead);
  const dWEnc = matmul(step.saeIn, dLinear, { transA: true, live: liveSlots(c.dead, "cols") });
  scatterAddCols(step.grads.W_enc, dWEnc, c.dead);
  scatterAddCols(perLatent(dBEnc), perLatent(reduceCols(dLinear)), c.dead);
}
