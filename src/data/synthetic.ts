/**
 * The embedded synthetic activation source: sparse combinations of a seeded ground-truth
 * dictionary (unit rows), Zipf-like firing probabilities, uniform magnitudes, a constant offset
 * and Gaussian noise. Lets `deno task train` run with no download, and gives a known dictionary
 * to measure recovery against.
 */
import { Rng } from "../util/rng.ts";
import type { ActivationSource } from "./source.ts";

export interface SyntheticConfig {
  d_in: number;
  /** Number of ground-truth features. */
  n_features: number;
  /** Firing probability of the most frequent feature; feature j fires with p_max / (j+1)^zipf. */
  p_max: number;
  zipf_exponent: number;
  /** Magnitudes are uniform in [min, max). */
  magnitude_min: number;
  magnitude_max: number;
  noise: number;
  offset_scale: number;
  seed: number;
}

export const DEFAULT_SYNTHETIC: Omit<SyntheticConfig, "d_in"> = {
  n_features: 512,
  p_max: 0.2,
  zipf_exponent: 0.8,
  magnitude_min: 0.5,
  magnitude_max: 2,
  noise: 0.02,
  offset_scale: 0.3,
  seed: 0,
};

/** An endless, seeded stream of activation batches with a known dictionary. */
export class SyntheticSource implements ActivationSource {
  /** Ground-truth feature directions [n_features, d_in], unit rows. */
  readonly trueFeatures: Float32Array;
  readonly firingProbs: Float64Array;
  readonly offset: Float32Array;
  /** Generator of the batch stream (its `state` is the data position for checkpoints). */
  readonly rng: Rng;

  constructor(readonly cfg: SyntheticConfig) {
    const setup = new Rng(cfg.seed * 2654435761 + 1);
    const { d_in: d, n_features: n } = cfg;
    this.trueFeatures = new Float32Array(n * d);
    for (let j = 0; j < n; j++) {
      let norm = 0;
      for (let i = 0; i < d; i++) norm += (this.trueFeatures[j * d + i] = setup.normal()) ** 2;
      norm = Math.sqrt(norm);
      for (let i = 0; i < d; i++) this.trueFeatures[j * d + i] /= norm;
    }
    this.firingProbs = Float64Array.from(
      { length: n },
      (_, j) => cfg.p_max / (j + 1) ** cfg.zipf_exponent,
    );
    this.offset = Float32Array.from({ length: d }, () => cfg.offset_scale * setup.normal());
    this.rng = new Rng(cfg.seed * 40503 + 7);
  }

  get dIn(): number {
    return this.cfg.d_in;
  }

  /** The generator state: the stream is a pure function of it. */
  position(): number {
    return this.rng.state;
  }

  restore(position: unknown): void {
    if (typeof position !== "number") {
      throw new Error(`synthetic source: bad checkpoint position ${JSON.stringify(position)}`);
    }
    this.rng.state = position;
  }

  nextBatch(rows: number): Promise<Float32Array> {
    return Promise.resolve(this.generate(rows));
  }

  /** The next [rows, d_in] batch, synchronously. */
  generate(rows: number): Float32Array {
    const { d_in: d, n_features: n, magnitude_min: lo, magnitude_max: hi, noise } = this.cfg;
    const out = new Float32Array(rows * d);
    for (let r = 0; r < rows; r++) {
      const row = out.subarray(r * d, (r + 1) * d);
      for (let i = 0; i < d; i++) row[i] = this.offset[i] + noise * this.rng.normal();
      for (let j = 0; j < n; j++) {
        if (this.rng.next() >= this.firingProbs[j]) continue;
        const magnitude = lo + (hi - lo) * this.rng.next();
        for (let i = 0; i < d; i++) row[i] += magnitude * this.trueFeatures[j * d + i];
      }
    }
    return out;
  }
}
