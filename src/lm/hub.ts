/**
 * `model_name` as a Hugging Face hub repo id: when it is not an existing local path but looks
 * like `org/name` or `name`, the files the loader needs (`MODEL_FILES`) are downloaded once into
 * a local cache directory, which is then loaded exactly like any local model directory.
 *
 * - Files come from the hub's plain HTTP layout, `<HF_ENDPOINT>/<repo>/resolve/<revision>/<file>`
 *   (`HF_ENDPOINT` defaults to https://huggingface.co), with `Authorization: Bearer $HF_TOKEN`
 *   when that is set.
 * - Cache: `$WEBGPU_SAE_HUB_CACHE/<repo>/<revision>`, by default under
 *   `$XDG_CACHE_HOME/webgpu-sae/hub` (`~/.cache/webgpu-sae/hub`). A file is written to a
 *   temporary sibling and renamed into place only once complete, so an interrupted download never
 *   looks cached; files already cached are not fetched again (a revision such as `main` is not
 *   re-checked: delete its directory to refresh it). When every file is cached the network is not
 *   touched.
 * - `HF_HUB_OFFLINE=1`: never contacts the hub; only a complete cache directory loads.
 * - `onnx/model.onnx_data` (ONNX external data, models over 2 GB): the hook-point patcher does not
 *   support external data, so a repo that has it is refused with that reason before the (large)
 *   file is downloaded.
 *
 * Why not transformers.js's own hub helpers (`getModelFile` with `env.remoteHost`/`env.cacheDir`):
 * its default cache lives inside the installed package (here Deno's npm cache), it keys files by
 * its own naming, it sends `HF_TOKEN` only to huggingface.co (not to an `HF_ENDPOINT` mirror), has
 * no `HF_HUB_OFFLINE`, would have to be switched to remote mode globally (the loader runs it
 * local-only), and its errors do not tell "unreachable" from "no such file". The loader also needs
 * a plain directory to patch `onnx/model.onnx` from. A small fetch-based downloader is clearer.
 * @module
 */
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { MODEL_FILES, ModelLoadError } from "./model.ts";

/** Where some ONNX exports keep their weights (external data); not supported by the patcher. */
export const EXTERNAL_DATA_FILE = "onnx/model.onnx_data";

export interface HubOptions {
  /** Hub host (default `HF_ENDPOINT`, else https://huggingface.co). */
  endpoint?: string;
  /** Bearer token (default `HF_TOKEN`). */
  token?: string;
  /** Cache root (default `WEBGPU_SAE_HUB_CACHE`, else `~/.cache/webgpu-sae/hub`). */
  cacheRoot?: string;
  /** Branch, tag or commit (default `main`). */
  revision?: string;
  /** Never contact the hub (default: `HF_HUB_OFFLINE` is 1/true/yes/on). */
  offline?: boolean;
  /** How long to wait for a response's headers before calling the hub unreachable (default 60 s). */
  timeoutMs?: number;
}

type Settings = Required<Omit<HubOptions, "token">> & { token?: string };

function env(name: string): string | undefined {
  const v = Deno.env.get(name);
  return v === undefined || v === "" ? undefined : v;
}

function settings(o: HubOptions): Settings {
  const cacheRoot = o.cacheRoot ?? env("WEBGPU_SAE_HUB_CACHE") ??
    join(env("XDG_CACHE_HOME") ?? join(homedir(), ".cache"), "webgpu-sae", "hub");
  return {
    endpoint: (o.endpoint ?? env("HF_ENDPOINT") ?? "https://huggingface.co").replace(/\/+$/, ""),
    token: o.token ?? env("HF_TOKEN"),
    cacheRoot,
    revision: o.revision ?? "main",
    offline: o.offline ??
      ["1", "true", "yes", "on"].includes((env("HF_HUB_OFFLINE") ?? "").toLowerCase()),
    timeoutMs: o.timeoutMs ?? 60_000,
  };
}

/** The hub's repo id rules: `name` or `org/name`; letters, digits, `-_.`; no `--`/`..`; ≤ 96. */
export function isHubRepoId(name: string): boolean {
  const parts = name.split("/");
  return name.length <= 96 && parts.length <= 2 &&
    parts.every((p) => /^[\w.-]+$/.test(p) && !/^[-.]|[-.]$|--|\.\./.test(p));
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** The cache directory of `repo` at the configured revision. */
export function hubCacheDirectory(repo: string, options: HubOptions = {}): string {
  const s = settings(options);
  return join(s.cacheRoot, ...repo.split("/"), encodeURIComponent(s.revision));
}

/**
 * The local directory to load `modelName` from: the path itself when it exists (or when the name
 * cannot be a repo id: the loader then reports it missing), else the hub cache of that repo,
 * downloading what is not cached yet.
 */
export async function resolveModelDirectory(
  modelName: string,
  options: HubOptions = {},
): Promise<string> {
  const local = resolve(modelName);
  if (await exists(local) || !isHubRepoId(modelName)) return local;
  return await downloadFromHub(modelName, options);
}

/** Downloads `repo`'s model files into its cache directory (skipping cached ones); returns it. */
export async function downloadFromHub(repo: string, options: HubOptions = {}): Promise<string> {
  const s = settings(options);
  const dir = hubCacheDirectory(repo, s);
  const missing: string[] = [];
  for (const f of MODEL_FILES) if (!await exists(join(dir, f))) missing.push(f);
  if (missing.length === 0) return dir;
  if (s.offline) {
    throw new ModelLoadError(
      `no local directory named ${repo}, and HF_HUB_OFFLINE is set so the hub is not contacted: its cache ${dir} lacks ${
        missing.join(", ")
      } (download it once online, or set model_name to a local model directory)`,
    );
  }
  for (const f of missing) await download(s, repo, f, join(dir, f));
  const probe = await request(s, repo, EXTERNAL_DATA_FILE, "HEAD");
  await probe.body?.cancel();
  if (probe.ok) {
    throw new ModelLoadError(
      `${repo}: onnx/model.onnx keeps its weights in ${EXTERNAL_DATA_FILE} (ONNX external data, used for models over 2 GB), which the hook-point patcher does not support yet; not downloading it. Use a model whose onnx/model.onnx is self-contained.`,
    );
  }
  return dir;
}

/** A request for `file` of `repo`; a network failure is reported as the hub being unreachable. */
async function request(
  s: Settings,
  repo: string,
  file: string,
  method: "GET" | "HEAD",
): Promise<Response> {
  const url = `${s.endpoint}/${repo}/resolve/${encodeURIComponent(s.revision)}/${file}`;
  const headers = new Headers({ "user-agent": "webgpu-sae" });
  if (s.token) headers.set("authorization", `Bearer ${s.token}`);
  const abort = new AbortController();
  const timer = setTimeout(
    () => abort.abort(new Error(`no response within ${s.timeoutMs / 1000} s`)),
    s.timeoutMs,
  );
  try {
    return await fetch(url, { method, headers, signal: abort.signal });
  } catch (e) {
    // Deno's fetch says "fetch failed"; the cause says why (refused, DNS, timeout...).
    const cause = (e as Error).cause instanceof Error
      ? `: ${((e as Error).cause as Error).message}`
      : "";
    throw new ModelLoadError(
      `no local directory named ${repo} and the hub at ${s.endpoint} is unreachable: ${
        (e as Error).message
      }${cause} (set HF_ENDPOINT for a mirror, or model_name to a local model directory)`,
    );
  } finally {
    clearTimeout(timer); // the timeout covers the response's headers, not a long body
  }
}

/** Why a response for a required file is not the file, in words. */
function httpError(s: Settings, repo: string, file: string, res: Response): ModelLoadError {
  const where = `the hub at ${s.endpoint}`;
  const code = res.headers.get("x-error-code");
  if (code === "RepoNotFound" || res.status === 401 || res.status === 403) {
    return new ModelLoadError(
      `${repo}: HTTP ${res.status} for ${file} from ${where}: the repository does not exist, or is private or gated (set HF_TOKEN to a token with access)`,
    );
  }
  if (code === "RevisionNotFound") {
    return new ModelLoadError(`${repo}: revision ${s.revision} not found on ${where}`);
  }
  if (res.status === 404) {
    return new ModelLoadError(
      `${repo}: ${file} not found on ${where} (revision ${s.revision}); a model repo needs ${
        MODEL_FILES.join(", ")
      }`,
    );
  }
  return new ModelLoadError(
    `${repo}: HTTP ${res.status} ${res.statusText} for ${file} from ${where}`,
  );
}

/** Downloads one required file to `path`: written to a temporary sibling, renamed when whole. */
async function download(s: Settings, repo: string, file: string, path: string): Promise<void> {
  const res = await request(s, repo, file, "GET");
  if (!res.ok) {
    await res.body?.cancel();
    throw httpError(s, repo, file, res);
  }
  await Deno.mkdir(dirname(path), { recursive: true });
  const temp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const out = await Deno.open(temp, { write: true, createNew: true });
    let received = 0;
    try {
      for await (const chunk of res.body ?? []) {
        for (let w = 0; w < chunk.length;) w += await out.write(chunk.subarray(w));
        received += chunk.length;
      }
      // fetch checks the length itself; decoded (compressed) bodies have another length.
      const length = res.headers.get("content-length");
      if (length !== null && !res.headers.has("content-encoding") && received !== +length) {
        throw new Error(`received ${received} of ${length} bytes`);
      }
      await out.sync();
    } finally {
      out.close();
    }
    await Deno.rename(temp, path);
  } catch (e) {
    await Deno.remove(temp).catch(() => {});
    throw new ModelLoadError(
      `${repo}: the download of ${file} from the hub at ${s.endpoint} was interrupted (${
        (e as Error).message
      }); nothing was cached for it, run again to retry`,
    );
  }
}
