/** Loads a fixture directory in the `sae-parity/1` format (manifest.json + one safetensors per case). */
import { join } from "node:path";
import { readSafetensors, toFloat64 } from "../src/io/safetensors.ts";

export interface FixtureCase {
  id: string;
  kind: string;
  architecture: string | null;
  saelens_version: string;
  file: string;
  config: Record<string, Record<string, unknown>>;
  tolerance: Record<string, unknown>;
  expected?: Record<string, unknown>;
  notes?: string;
  tensors: Record<string, { dtype: string; shape: number[] }>;
}

export interface Manifest {
  format: string;
  cases: FixtureCase[];
}

/** A stored tensor with its values widened to float64 (exact for f32 sources). */
export interface StoredTensor {
  dtype: string;
  shape: number[];
  values: Float64Array;
}

/** Reads and sanity-checks `manifest.json` in `dir`. */
export async function loadManifest(dir: string): Promise<Manifest> {
  const path = join(dir, "manifest.json");
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(
      `${path}: cannot read the fixture manifest (${(e as Error).message}); pass --fixtures DIR`,
    );
  }
  const manifest = JSON.parse(text) as Manifest;
  if (!Array.isArray(manifest.cases)) throw new Error(`${path}: "cases" must be an array`);
  return manifest;
}

/** All tensors of one case. */
export async function loadCaseTensors(
  dir: string,
  c: FixtureCase,
): Promise<Map<string, StoredTensor>> {
  const { tensors } = await readSafetensors(join(dir, c.file));
  const out = new Map<string, StoredTensor>();
  for (const [name, entry] of tensors) {
    out.set(name, { dtype: entry.dtype, shape: entry.shape, values: toFloat64(entry) });
  }
  return out;
}
