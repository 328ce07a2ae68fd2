/** Opens the activation source a run config names (`data.source`). */
import type { RunConfig } from "../config/run.ts";
import type { ActivationSource } from "./source.ts";
import { SyntheticSource } from "./synthetic.ts";

export function openSource(config: RunConfig, dIn: number): ActivationSource {
  switch (config.data.source) {
    case "synthetic":
      return new SyntheticSource({ ...config.data, d_in: dIn });
  }
}
