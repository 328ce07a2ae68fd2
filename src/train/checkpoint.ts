/**
 * Checkpoints: everything a run needs to continue bit-identically (parameters, Adam moments and
 * step, state buffers, the trainer's counters, the data position, the activation scale). Each is
 * written to a temporary directory and renamed into place, so a run killed mid-write leaves the
 * previous checkpoint intact and never a partial one.
 */
import { join } from "node:path";
import { writeDirectoryAtomic } from "../io/atomic.ts";
import { readSafetensors, serializeSafetensors, toFloat32 } from "../io/safetensors.ts";
import type { Tensor } from "../gpu/tensor.ts";
import type { TrainingSae } from "../saes/training_sae.ts";
import type { Measured } from "../saes/step.ts";
import type { Trainer, TrainerState } from "./trainer.ts";

const TENSORS_FILE = "state.safetensors";
const META_FILE = "trainer.json";

/** Host-side facts of a checkpoint besides the tensors. */
export interface CheckpointMeta {
  nTrainingSteps: number;
  nTrainingSamples: number;
  nFracActiveSamples: number;
  adamStep: number;
  /** What picks kernel paths, so a resumed run takes the same ones. */
  measured?: Measured;
  /** The activation source's position (`ActivationSource.position()`). */
  dataPosition: unknown;
  /** expected_average_only_in factor (1 when unused). */
  scalingFactor: number;
}

/** Directory name of the checkpoint after `step` steps (sorts by step). */
export function checkpointName(step: number): string {
  return `step-${String(step).padStart(9, "0")}`;
}

/** Writes a checkpoint under `dir/step-N` atomically; keeps the newest `keep` checkpoints. */
export async function saveCheckpoint(
  dir: string,
  sae: TrainingSae,
  trainer: Trainer,
  meta: Omit<CheckpointMeta, keyof TrainerState | "adamStep" | "measured">,
  keep = 3,
): Promise<string> {
  const gpu = sae.gpu;
  const named: [string, Tensor][] = [];
  for (const [n, t] of Object.entries(sae.params)) named.push([`params.${n}`, t]);
  for (const [n, t] of Object.entries(sae.adam.expAvg)) named.push([`adam.exp_avg.${n}`, t]);
  for (const [n, t] of Object.entries(sae.adam.expAvgSq)) named.push([`adam.exp_avg_sq.${n}`, t]);
  for (const [n, t] of Object.entries(sae.state)) named.push([`state.${n}`, t]);
  const values = await gpu.readMany(named.map(([, t]) => t));
  const trainerState = await trainer.readState();
  const tensors = named.map(([name, t], i) => ({
    name,
    dtype: "float32" as const,
    shape: [...t.shape],
    data: values[i],
  }));
  tensors.push(
    {
      name: "counters.act_freq_scores",
      dtype: "float32",
      shape: [trainerState.actFreqScores.length],
      data: trainerState.actFreqScores,
    },
    {
      name: "counters.passes_since_fired",
      dtype: "float32",
      shape: [trainerState.passesSinceFired.length],
      data: trainerState.passesSinceFired,
    },
  );
  const full: CheckpointMeta = {
    nTrainingSteps: trainerState.nTrainingSteps,
    nTrainingSamples: trainerState.nTrainingSamples,
    nFracActiveSamples: trainerState.nFracActiveSamples,
    adamStep: sae.adam.step,
    measured: sae.measured,
    ...meta,
  };
  const target = join(dir, checkpointName(full.nTrainingSteps));
  await writeDirectoryAtomic(target, {
    [TENSORS_FILE]: serializeSafetensors(tensors),
    [META_FILE]: new TextEncoder().encode(JSON.stringify(full, null, 2) + "\n"),
  });
  for (const old of (await listCheckpoints(dir)).slice(0, -keep)) {
    await Deno.remove(join(dir, old), { recursive: true });
  }
  return target;
}

/** Completed checkpoints in `dir`, oldest first (temporary directories are ignored). */
export async function listCheckpoints(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory && /^step-\d{9}$/.test(e.name)) names.push(e.name);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return names.sort();
}

/** Restores the newest checkpoint in `dir` into `sae` and `trainer`; returns its meta. */
export async function loadLatestCheckpoint(
  dir: string,
  sae: TrainingSae,
  trainer: Trainer,
): Promise<CheckpointMeta> {
  const names = await listCheckpoints(dir);
  if (names.length === 0) {
    throw new Error(`${dir}: no checkpoint to resume from (expected step-NNNNNNNNN directories)`);
  }
  const path = join(dir, names[names.length - 1]);
  const meta = JSON.parse(await Deno.readTextFile(join(path, META_FILE))) as CheckpointMeta;
  const { tensors } = await readSafetensors(join(path, TENSORS_FILE));
  const get = (name: string) => {
    const entry = tensors.get(name);
    if (!entry) {
      throw new Error(
        `${
          join(path, TENSORS_FILE)
        }: missing tensor ${name}; the checkpoint does not match this SAE`,
      );
    }
    return toFloat32(entry);
  };
  const gpu = sae.gpu;
  for (const [n, t] of Object.entries(sae.params)) gpu.write(t, get(`params.${n}`));
  for (const [n, t] of Object.entries(sae.adam.expAvg)) gpu.write(t, get(`adam.exp_avg.${n}`));
  for (const [n, t] of Object.entries(sae.adam.expAvgSq)) gpu.write(t, get(`adam.exp_avg_sq.${n}`));
  for (const [n, t] of Object.entries(sae.state)) gpu.write(t, get(`state.${n}`));
  sae.adam.step = meta.adamStep;
  sae.measured = meta.measured;
  trainer.loadState({
    nTrainingSteps: meta.nTrainingSteps,
    nTrainingSamples: meta.nTrainingSamples,
    nFracActiveSamples: meta.nFracActiveSamples,
    actFreqScores: get("counters.act_freq_scores"),
    passesSinceFired: get("counters.passes_since_fired"),
  });
  return meta;
}
