/**
 * A causal LM read from a local Hugging Face-layout directory (`config.json`, `tokenizer.json`,
 * `tokenizer_config.json`, `onnx/model.onnx`) through transformers.js, with one residual-stream
 * hook point exposed: the ONNX graph is patched in memory (see `hook_points.ts`) so the hook's
 * value is a graph output and nothing after it is computed, then run by transformers.js's model
 * class on onnxruntime-node (CPU). A hub repo id is turned into such a directory by `hub.ts`.
 *
 * transformers.js is imported lazily, so runs that use no language model never load
 * onnxruntime's native library. Deno needs `--allow-read --allow-write --allow-env --allow-ffi`
 * (write: the patched model is handed to onnxruntime through a temporary directory).
 * @module
 */
import { join, resolve } from "node:path";
import { parseHookName, patchForHook, type ResidualStream } from "./hook_points.ts";
import { parseOnnxModel } from "./onnx.ts";

/** A missing or unreadable model file, a bad config, or an unsupported model; names the file. */
export class ModelLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelLoadError";
  }
}

/** The files a model directory must hold, relative to it. */
export const MODEL_FILES = [
  "config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "onnx/model.onnx",
] as const;

export interface HookedLmOptions {
  /** SAELens hook name: `blocks.L.hook_resid_pre|mid|post`. */
  hookName: string;
  /** Prune the graph after the hook point (default true; false only to measure it). */
  prune?: boolean;
  /** onnxruntime intra-op threads (default: onnxruntime's choice, all cores). */
  threads?: number;
}

interface HfConfig {
  model_type?: string;
  n_layer?: number;
  num_hidden_layers?: number;
  n_embd?: number;
  hidden_size?: number;
  d_model?: number;
}

// deno-lint-ignore no-explicit-any
type Any = any;

async function readChecked(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new ModelLoadError(
        `${path}: missing (a model directory needs ${MODEL_FILES.join(", ")})`,
      );
    }
    throw new ModelLoadError(`${path}: cannot read (${(e as Error).message})`);
  }
}

function positiveIntField(config: HfConfig, keys: (keyof HfConfig)[], file: string): number {
  for (const k of keys) {
    const v = config[k];
    if (v === undefined) continue;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
      throw new ModelLoadError(
        `${file}: "${k}" must be a positive integer, got ${JSON.stringify(v)}`,
      );
    }
    return v;
  }
  throw new ModelLoadError(`${file}: needs one of ${keys.map((k) => `"${k}"`).join(", ")}`);
}

/** Reads and checks config.json: the number of blocks and the residual width. */
export async function readModelConfig(
  dir: string,
): Promise<{ nLayers: number; dModel: number; modelType: string }> {
  const file = join(dir, "config.json");
  const text = new TextDecoder().decode(await readChecked(file));
  let config: HfConfig;
  try {
    config = JSON.parse(text);
  } catch (e) {
    throw new ModelLoadError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new ModelLoadError(`${file}: must be a JSON object`);
  }
  return {
    nLayers: positiveIntField(config, ["n_layer", "num_hidden_layers"], file),
    dModel: positiveIntField(config, ["n_embd", "hidden_size", "d_model"], file),
    modelType: typeof config.model_type === "string" ? config.model_type : "",
  };
}

/** Checks that `dir` is a model directory with every file present; throws naming what is not. */
export async function checkModelDirectory(dir: string): Promise<void> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(dir);
  } catch {
    throw new ModelLoadError(
      `${dir}: model directory not found (model_name must be a local directory in Hugging Face layout: ${
        MODEL_FILES.join(", ")
      }; or a hub repo id, org/name)`,
    );
  }
  if (!stat.isDirectory) throw new ModelLoadError(`${dir}: model_name must be a directory`);
  const missing: string[] = [];
  for (const f of MODEL_FILES) {
    try {
      await Deno.stat(join(dir, f));
    } catch {
      missing.push(join(dir, f));
    }
  }
  if (missing.length > 0) {
    throw new ModelLoadError(
      `${missing.join(", ")}: missing (a model directory needs ${MODEL_FILES.join(", ")})`,
    );
  }
}

let transformersModule: Promise<Any> | undefined;

/** transformers.js, configured for local files only. */
export function loadTransformers(): Promise<Any> {
  transformersModule ??= (async () => {
    // onnxruntime-node's install script fetches CUDA files; it is never needed here.
    if (Deno.env.get("ONNXRUNTIME_NODE_INSTALL") === undefined) {
      try {
        Deno.env.set("ONNXRUNTIME_NODE_INSTALL", "skip");
      } catch { /* no env permission: harmless */ }
    }
    const t = await import("@huggingface/transformers");
    t.env.allowRemoteModels = false;
    t.env.allowLocalModels = true;
    t.env.useFSCache = false;
    t.env.useBrowserCache = false;
    return t;
  })();
  return transformersModule;
}

/** A tokenizer from a model directory, with the ids SAELens treats as special. */
export class LmTokenizer {
  private constructor(
    private readonly tokenizer: Any,
    /** Token prepended when `prepend_bos` (null when the tokenizer has none). */
    readonly bosTokenId: number | null,
    /** bos/eos/pad/unk/sep/mask ids and every added special token (SAELens's special tokens). */
    readonly specialTokenIds: readonly number[],
    readonly vocabSize: number,
  ) {}

  static async load(dir: string): Promise<LmTokenizer> {
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
      const path = join(dir, f);
      const text = new TextDecoder().decode(await readChecked(path));
      try {
        JSON.parse(text);
      } catch (e) {
        throw new ModelLoadError(`${path}: not valid JSON (${(e as Error).message})`);
      }
    }
    const t = await loadTransformers();
    let tok: Any;
    try {
      // An absolute path: transformers.js reads "a/b" as a hub id under its own models folder.
      tok = await t.AutoTokenizer.from_pretrained(resolve(dir), { local_files_only: true });
    } catch (e) {
      throw new ModelLoadError(
        `${join(dir, "tokenizer.json")}: cannot load the tokenizer (${(e as Error).message})`,
      );
    }
    const ids = new Set<number>();
    for (
      const k of [
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "unk_token_id",
        "sep_token_id",
        "mask_token_id",
      ]
    ) {
      const v = tok[k];
      if (typeof v === "number" && v >= 0) ids.add(v);
    }
    for (const v of tok.all_special_ids ?? []) if (typeof v === "number") ids.add(v);
    const bos = typeof tok.bos_token_id === "number" ? tok.bos_token_id : null;
    const vocab = tok._tokenizer?.get_vocab?.(true) ?? tok.get_vocab?.() ?? {};
    const vocabSize = vocab instanceof Map ? vocab.size : Object.keys(vocab).length;
    return new LmTokenizer(tok, bos, [...ids].sort((a, b) => a - b), vocabSize);
  }

  /** The id of the tokenizer's `bos`, `eos` or `sep` token (null when it has none). */
  namedTokenId(name: "bos" | "eos" | "sep"): number | null {
    const v = this.tokenizer[`${name}_token_id`];
    return typeof v === "number" && v >= 0 ? v : null;
  }

  /** The vocabulary as [token, id] pairs sorted by id (added tokens included). */
  vocabEntries(): [string, number][] {
    const vocab = this.tokenizer._tokenizer?.get_vocab?.(true) ?? this.tokenizer.get_vocab?.() ??
      {};
    const entries: [string, number][] = vocab instanceof Map
      ? [...vocab.entries()]
      : Object.entries(vocab);
    return entries.sort((a, b) => a[1] - b[1]);
  }

  /** Token ids of `text`, without special tokens added (SAELens: `prepend_bos=False`). */
  encode(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false });
  }

  decode(ids: readonly number[]): string {
    return this.tokenizer.decode(ids, { skip_special_tokens: false });
  }
}

/** The LM with one hook point exposed: `run` gives that hook's activations for token ids. */
export class HookedLm {
  private constructor(
    private readonly model: Any,
    private readonly transformers: Any,
    private readonly outputName: string,
    private readonly inputNames: readonly string[],
    readonly dir: string,
    readonly hookName: string,
    readonly dModel: number,
    readonly nLayers: number,
    readonly stream: ResidualStream,
    readonly nodeCount: { before: number; after: number },
  ) {}

  /** Loads and patches the model in `dir` for `options.hookName`. */
  static async load(dir: string, options: HookedLmOptions): Promise<HookedLm> {
    parseHookName(options.hookName);
    await checkModelDirectory(dir);
    const { nLayers, dModel } = await readModelConfig(dir);
    const onnxPath = join(dir, "onnx", "model.onnx");
    const bytes = await readChecked(onnxPath);
    const patched = patchForHook(parseOnnxModel(bytes, onnxPath), nLayers, options.hookName, {
      dModel,
      prune: options.prune ?? true,
    });
    const t = await loadTransformers();
    // transformers.js opens `<dir>/onnx/model.onnx` by path; hand it the patched model that way.
    const tmp = await Deno.makeTempDir({ prefix: "webgpu-sae-lm-" });
    let model: Any;
    try {
      await Deno.copyFile(join(dir, "config.json"), join(tmp, "config.json"));
      await Deno.mkdir(join(tmp, "onnx"));
      await Deno.writeFile(join(tmp, "onnx", "model.onnx"), patched.bytes);
      const sessionOptions: Record<string, unknown> = {};
      if (options.threads) sessionOptions.intraOpNumThreads = options.threads;
      try {
        model = await t.AutoModel.from_pretrained(tmp, {
          local_files_only: true,
          dtype: "fp32",
          device: "cpu",
          session_options: sessionOptions,
        });
      } catch (e) {
        throw new ModelLoadError(
          `${onnxPath}: onnxruntime could not load the patched model (${(e as Error).message})`,
        );
      }
    } finally {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
    const session = model.sessions?.model;
    if (!session) {
      throw new ModelLoadError(`${onnxPath}: transformers.js opened no "model" session`);
    }
    const inputNames: string[] = session.inputNames;
    if (!inputNames.includes("input_ids")) {
      throw new ModelLoadError(
        `${onnxPath}: the model has no input_ids input (inputs: ${inputNames.join(", ")})`,
      );
    }
    return new HookedLm(
      model,
      t,
      patched.outputName,
      inputNames,
      dir,
      options.hookName,
      dModel,
      nLayers,
      patched.stream,
      patched.nodeCount,
    );
  }

  /**
   * The hook's activations for `batch` sequences of `seqLen` tokens (row-major ids), all
   * attended to: [batch * seqLen, d_model] row-major.
   */
  async run(ids: ArrayLike<number>, batch: number, seqLen: number): Promise<Float32Array> {
    if (ids.length !== batch * seqLen) {
      throw new Error(`HookedLm.run: ${ids.length} ids for ${batch} x ${seqLen}`);
    }
    const { Tensor } = this.transformers;
    const idData = new BigInt64Array(ids.length);
    for (let i = 0; i < ids.length; i++) idData[i] = BigInt(ids[i]);
    const feeds: Record<string, unknown> = {
      input_ids: new Tensor("int64", idData, [batch, seqLen]),
    };
    if (this.inputNames.includes("attention_mask")) {
      feeds.attention_mask = new Tensor("int64", new BigInt64Array(ids.length).fill(1n), [
        batch,
        seqLen,
      ]);
    }
    const out = await this.model(feeds);
    const value = out[this.outputName];
    if (!value) throw new Error(`${this.dir}: the patched model returned no ${this.outputName}`);
    const dims: number[] = value.dims;
    if (dims.length !== 3 || dims[0] !== batch || dims[1] !== seqLen || dims[2] !== this.dModel) {
      throw new Error(
        `${this.dir}: ${this.hookName} has shape [${dims}], expected [${batch}, ${seqLen}, ${this.dModel}]`,
      );
    }
    if (!(value.data instanceof Float32Array)) {
      throw new Error(
        `${this.dir}: ${this.hookName} is ${value.type}, only float32 models are supported`,
      );
    }
    return value.data;
  }

  async dispose(): Promise<void> {
    await this.model.dispose?.();
  }
}
