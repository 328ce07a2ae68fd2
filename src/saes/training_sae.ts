/**
 * An SAE being trained on the GPU: parameters, state buffers and Adam moments, with the step
 * split into phases (forward+backward, clip, optimizer) so parity checks can read between them.
 * Training code calls the phases back to back without any readback.
 */
import type { Gpu } from "../gpu/device.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { Adam, clipCoefficient } from "../train/optimizer.ts";
import type { Architecture } from "./architecture.ts";
import { type Measured, type StepConfig, type StepOutputs, TrainStep } from "./step.ts";

/** Everything one forward+backward produced (GPU tensors, nothing read back). */
export interface StepResult {
  outputs: StepOutputs;
  losses: Record<string, Tensor>;
  total: Tensor;
  grads: Record<string, Tensor>;
  /** Offsets of feature_acts's latent lists when the step built them (firing counts). */
  latentOffsets?: Tensor;
}

export class TrainingSae<C extends StepConfig = StepConfig> {
  readonly adam: Adam;
  /**
   * What the last logged step measured (set by the trainer when it reads metrics): picks
   * between sparse and dense paths and sizes AuxK's dense part.
   */
  measured?: Measured;

  constructor(
    readonly gpu: Gpu,
    readonly arch: Architecture<C>,
    readonly cfg: C,
    readonly params: Record<string, Tensor>,
    readonly state: Record<string, Tensor>,
    adamBetas: { beta1: number; beta2: number },
  ) {
    this.adam = new Adam(params, adamBetas);
  }

  /** Uploads host parameters (SAELens names) and state values. */
  static fromHost<C extends StepConfig>(
    gpu: Gpu,
    arch: Architecture<C>,
    cfg: C,
    hostParams: Record<string, Float32Array>,
    hostState: Record<string, number>,
    adamBetas: { beta1: number; beta2: number },
  ): TrainingSae<C> {
    const shapes = arch.paramShapes(cfg);
    const params: Record<string, Tensor> = {};
    for (const [name, shape] of Object.entries(shapes)) {
      const data = hostParams[name];
      if (!data) throw new Error(`missing parameter ${name} for architecture ${arch.name}`);
      params[name] = gpu.upload(data, shape);
    }
    const initial = { ...(arch.initialState?.(cfg) ?? {}), ...hostState };
    const state: Record<string, Tensor> = {};
    for (const [name, value] of Object.entries(initial)) {
      state[name] = gpu.upload(Float32Array.of(value), [1]);
    }
    return new TrainingSae(gpu, arch, cfg, params, state, adamBetas);
  }

  /** Forward pass, every loss term and every parameter gradient for one batch. */
  forwardBackward(x: Tensor, deadMask: Tensor, coefficients: Record<string, number>): StepResult {
    return this.gpu.scope(() => {
      const step = new TrainStep(this.cfg, this.params, {
        x,
        deadMask,
        coefficients,
        measured: this.measured,
      });
      // Merged by descriptor: a lazy output (a getter) stays lazy.
      const outputs = Object.defineProperties(
        {},
        {
          ...Object.getOwnPropertyDescriptors(step.normalization.outputs),
          ...Object.getOwnPropertyDescriptors(this.arch.trainForward(step, this.cfg, this.state)),
        },
      ) as StepOutputs;
      step.finish();
      return {
        outputs,
        losses: step.losses,
        total: step.totalLoss(),
        grads: step.grads,
        latentOffsets: step.featureLists?.byLatent.offsets,
      };
    });
  }

  /** Global-norm clipping at 1.0 (SAELens): returns [pre-clip norm, scale] for optimizerStep. */
  clip(grads: Record<string, Tensor>): Tensor {
    return clipCoefficient(Object.keys(this.params).map((name) => grads[name]), 1.0);
  }

  /** One Adam update, scaling gradients by a `clip` result as they are read when given. */
  optimizerStep(grads: Record<string, Tensor>, lr: number, clip?: Tensor): void {
    this.adam.update(grads, lr, clip);
  }

  /** Host copies of all parameters (one sync). */
  async readParams(): Promise<Record<string, Float32Array>> {
    const names = Object.keys(this.params);
    const values = await this.gpu.readMany(names.map((n) => this.params[n]));
    return Object.fromEntries(names.map((n, i) => [n, values[i]]));
  }

  /** Host values of the state buffers (one sync). */
  async readState(): Promise<Record<string, number>> {
    const names = Object.keys(this.state);
    const values = await this.gpu.readMany(names.map((n) => this.state[n]));
    return Object.fromEntries(names.map((n, i) => [n, values[i][0]]));
  }
}
