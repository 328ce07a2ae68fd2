/** Architecture name → implementation. Adding an architecture means adding one line here. */
import type { Architecture } from "./architecture.ts";
import { gated } from "./gated.ts";
import { jumprelu } from "./jumprelu.ts";
import { batchtopk } from "./batchtopk.ts";
import { matryoshka } from "./matryoshka.ts";
import { standard } from "./standard.ts";
import { standardV5 } from "./standard_v5.ts";
import { topk } from "./topk.ts";
import type { StepConfig } from "./step.ts";

// deno-lint-ignore no-explicit-any
const ARCHITECTURES: Record<string, Architecture<any>> = {
  gated,
  jumprelu,
  standard,
  standard_v5: standardV5,
  topk,
  batchtopk,
  matryoshka_batchtopk: matryoshka,
};

/** The implementation registered under `name`, or an error listing the valid names. */
export function getArchitecture(name: string): Architecture<StepConfig> {
  const arch = ARCHITECTURES[name];
  if (!arch) {
    throw new Error(
      `unknown architecture "${name}"; registered: ${Object.keys(ARCHITECTURES).join(", ")}`,
    );
  }
  return arch;
}

/** Names of all registered architectures. */
export function architectureNames(): string[] {
  return Object.keys(ARCHITECTURES);
}
