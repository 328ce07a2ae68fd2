/** Opens the activation source a run config names (`data.source`). */
import type { RunConfig } from "../config/run.ts";
import { CachedActivationSource } from "./cached_source.ts";
import { ModelActivationSource, PretokenizedActivationSource } from "./model_source.ts";
import type { ActivationSource } from "./source.ts";
import { SyntheticSource } from "./synthetic.ts";

export function openSource(config: RunConfig, dIn: number): ActivationSource {
  switch (config.data.source) {
    case "synthetic":
      return new SyntheticSource({ ...config.data, d_in: dIn });
    case "model":
      return new ModelActivationSource(config.data, dIn);
    case "pretokenized":
      return new PretokenizedActivationSource(config.data, dIn);
    case "cached":
      return CachedActivationSource.fromConfig(config.data, dIn);
  }
}
