/**
 * SAELens's on-disk SAE layout: `cfg.json` (inference config), `sae_weights.safetensors`
 * (state dict, SAELens tensor names) and `sparsity.safetensors` (`sparsity` = log10 feature
 * density), so SAELens's `SAE.load_from_disk` can read what we train and we can read its SAEs.
 */
import { join } from "node:path";
import type { InferenceSae } from "../saes/architecture.ts";
import { writeDirectoryAtomic } from "./atomic.ts";
import { readSafetensors, serializeSafetensors, toFloat32 } from "./safetensors.ts";

export const CFG_FILE = "cfg.json";
export const WEIGHTS_FILE = "sae_weights.safetensors";
export const SPARSITY_FILE = "sparsity.safetensors";

/** Training-config fields that SAELens keeps in an inference `cfg.json`. */
export interface SaeDirectoryConfig {
  d_in: number;
  d_sae: number;
  apply_b_dec_to_input: boolean;
  normalize_activations: string;
  metadata?: Record<string, unknown>;
}

/**
 * Writes an SAE directory atomically: everything goes to a sibling temp directory which then
 * replaces `dir` by rename, so a crash never leaves a half-written SAE.
 */
export async function saveSaeDirectory(
  dir: string,
  sae: InferenceSae,
  base: SaeDirectoryConfig,
  logFeatureSparsity?: Float32Array,
): Promise<void> {
  const cfg = {
    architecture: sae.architecture,
    d_in: base.d_in,
    d_sae: base.d_sae,
    dtype: "float32",
    device: "cpu",
    apply_b_dec_to_input: base.apply_b_dec_to_input,
    normalize_activations: base.normalize_activations,
    reshape_activations: "none",
    metadata: { ...(base.metadata ?? {}), written_by: "webgpu-sae" },
    ...sae.config,
  };
  const weights = Object.entries(sae.weights).map(([name, w]) => ({
    name,
    dtype: "float32" as const,
    shape: w.shape,
    data: w.data,
  }));
  const files: Record<string, Uint8Array> = {
    [CFG_FILE]: new TextEncoder().encode(JSON.stringify(cfg, null, 2) + "\n"),
    [WEIGHTS_FILE]: serializeSafetensors(weights, { format: "pt" }),
  };
  if (logFeatureSparsity) {
    files[SPARSITY_FILE] = serializeSafetensors(
      [{ name: "sparsity", dtype: "float32", shape: [base.d_sae], data: logFeatureSparsity }],
      { format: "pt" },
    );
  }
  await writeDirectoryAtomic(dir, files);
}

/** Reads an SAE directory (ours or SAELens's) into an inference SAE plus its config. */
export async function loadSaeDirectory(
  dir: string,
): Promise<{ sae: InferenceSae; cfg: SaeDirectoryConfig & Record<string, unknown> }> {
  const cfgPath = join(dir, CFG_FILE);
  let cfg: SaeDirectoryConfig & Record<string, unknown>;
  try {
    cfg = JSON.parse(await Deno.readTextFile(cfgPath));
  } catch (e) {
    throw new Error(
      `${cfgPath}: cannot read the SAE config (${
        (e as Error).message
      }); is ${dir} an SAE directory?`,
    );
  }
  const architecture = cfg.architecture as InferenceSae["architecture"];
  if (!["standard", "topk", "jumprelu", "gated"].includes(architecture)) {
    throw new Error(
      `${cfgPath}: architecture "${architecture}" cannot be loaded for inference (standard, topk, jumprelu, gated)`,
    );
  }
  const { tensors } = await readSafetensors(join(dir, WEIGHTS_FILE));
  const weights: InferenceSae["weights"] = {};
  for (const [name, entry] of tensors) {
    weights[name] = { data: toFloat32(entry), shape: entry.shape };
  }
  for (const required of ["W_enc", "W_dec", "b_dec"]) {
    if (!weights[required]) {
      throw new Error(`${join(dir, WEIGHTS_FILE)}: missing tensor ${required}`);
    }
  }
  const config: Record<string, unknown> = {};
  for (const key of ["k", "rescale_acts_by_decoder_norm", "use_sparse_activations"]) {
    if (key in cfg) config[key] = cfg[key];
  }
  return { sae: { architecture, weights, config }, cfg };
}
