/**
 * `model_name` as a Hugging Face hub repo id (`src/lm/hub.ts`), offline: a loopback HTTP server
 * serves the tiny GPT-2 fixture in the hub's `/<repo>/resolve/main/<file>` layout and counts
 * requests; `HF_ENDPOINT` points at it and `WEBGPU_SAE_HUB_CACHE` at a temporary directory.
 */
import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { ModelActivationSource, type ModelSourceConfig } from "../src/data/model_source.ts";
import {
  downloadFromHub,
  EXTERNAL_DATA_FILE,
  isHubRepoId,
  resolveModelDirectory,
} from "../src/lm/hub.ts";
import { MODEL_FILES, ModelLoadError } from "../src/lm/model.ts";

const lmTest = { sanitizeOps: false, sanitizeResources: false } as const;
const FIXTURE = "fixtures/tiny-gpt2";
const REPO = "test-org/tiny-gpt2";
const HUB_VARS = ["HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "WEBGPU_SAE_HUB_CACHE"];

interface HubFiles {
  /** Answered 404. */
  missing?: string[];
  /** Half the body is sent, then the connection closes. */
  truncated?: string[];
  /** Served (16 zero bytes) besides the fixture's files. */
  extra?: string[];
}

interface FakeHub {
  endpoint: string;
  /** "METHOD /path" of every request, in order. */
  requests: string[];
  /** The Authorization header of every request. */
  auth: (string | null)[];
  files: HubFiles;
}

/** Serves FIXTURE as REPO at revision main on 127.0.0.1; 404 for anything else. */
function startHub(files: HubFiles) {
  const hub: FakeHub = { endpoint: "", requests: [], auth: [], files };
  const prefix = `/${REPO}/resolve/main/`;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    hub.requests.push(`${req.method} ${path}`);
    hub.auth.push(req.headers.get("authorization"));
    const file = path.startsWith(prefix) ? path.slice(prefix.length) : "";
    const extra = hub.files.extra?.includes(file);
    if (!(MODEL_FILES as readonly string[]).includes(file) && !extra) {
      return new Response("Entry not found", { status: 404 });
    }
    if (hub.files.missing?.includes(file)) return new Response("Entry not found", { status: 404 });
    const bytes = extra ? new Uint8Array(16) : await Deno.readFile(join(FIXTURE, file));
    const headers = { "content-length": String(bytes.length) };
    if (req.method === "HEAD") return new Response(null, { headers });
    if (!hub.files.truncated?.includes(file)) return new Response(bytes, { headers });
    const half = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes.subarray(0, bytes.length >> 1));
        c.close(); // shorter than content-length: the connection is dropped mid-body
      },
    });
    return new Response(half, { headers });
  });
  hub.endpoint = `http://127.0.0.1:${server.addr.port}`;
  const stop = async () => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("the fake hub did not stop within 5 s")), 5000);
    });
    try {
      await Promise.race([server.shutdown(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  };
  return { hub, stop };
}

/** Runs `fn` against a fake hub with a fresh cache; restores the environment and stops the hub. */
async function withHub(
  files: HubFiles,
  fn: (hub: FakeHub, cache: string) => Promise<void>,
): Promise<void> {
  const saved = HUB_VARS.map((k) => [k, Deno.env.get(k)] as const);
  const cache = await Deno.makeTempDir({ prefix: "hub-cache-" });
  const { hub, stop } = startHub(files);
  try {
    for (const k of HUB_VARS) Deno.env.delete(k);
    Deno.env.set("HF_ENDPOINT", hub.endpoint);
    Deno.env.set("WEBGPU_SAE_HUB_CACHE", cache);
    await fn(hub, cache);
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    await stop();
    await Deno.remove(cache, { recursive: true });
  }
}

/** Every file under `dir`, relative, sorted. */
async function listFiles(dir: string, sub = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(join(dir, sub))) {
    const rel = sub ? `${sub}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...await listFiles(dir, rel));
    else out.push(rel);
  }
  return out.sort();
}

function sourceConfig(model_name: string): ModelSourceConfig {
  return {
    model_name,
    hook_name: "blocks.1.hook_resid_post",
    dataset_path: join(FIXTURE, "corpus", "brown-ca01.txt"),
    context_size: 16,
    prepend_bos: true,
    store_batch_size_prompts: 4,
    n_batches_in_buffer: 4,
    exclude_special_tokens: true,
    seed: 3,
    threads: 1,
  };
}

async function batches(model_name: string, n: number): Promise<Float32Array[]> {
  const source = new ModelActivationSource(sourceConfig(model_name), 64);
  try {
    const out: Float32Array[] = [];
    for (let i = 0; i < n; i++) out.push(await source.nextBatch(32));
    return out;
  } finally {
    await source.close();
  }
}

const cachedDir = (cache: string) => join(cache, "test-org", "tiny-gpt2", "main");

Deno.test("hub: repo ids and local paths", async () => {
  for (const id of ["gpt2", "test-org/tiny-gpt2", "EleutherAI/pythia-70m", "a.b_c-d/x1"]) {
    assert.ok(isHubRepoId(id), id);
  }
  for (const p of ["", "./m", "/abs/m", "../m", "a/b/c", "a--b", "x.", "-x", "a/b/"]) {
    assert.ok(!isHubRepoId(p), p);
  }
  await withHub({}, async (hub) => {
    // An existing directory wins even though it looks like a repo id; a path that cannot be a
    // repo id is left for the loader to report missing.
    assert.equal(await resolveModelDirectory(FIXTURE), resolve(FIXTURE));
    assert.equal(await resolveModelDirectory("runs/no/such-model"), resolve("runs/no/such-model"));
    assert.deepEqual(hub.requests, []);
  });
});

Deno.test(
  "hub: a repo id gives the local fixture's activations, then loads from the cache",
  lmTest,
  async () => {
    await withHub({}, async (hub, cache) => {
      Deno.env.set("HF_TOKEN", "hf_test");
      const local = await batches(FIXTURE, 3);
      assert.deepEqual(hub.requests, [], "a local directory makes no request");
      const remote = await batches(REPO, 3);
      assert.deepEqual(hub.requests, [
        ...MODEL_FILES.map((f) => `GET /${REPO}/resolve/main/${f}`),
        `HEAD /${REPO}/resolve/main/${EXTERNAL_DATA_FILE}`,
      ]);
      assert.ok(hub.auth.every((a) => a === "Bearer hf_test"), "HF_TOKEN is sent");
      for (let i = 0; i < local.length; i++) {
        assert.ok(remote[i].every((v, j) => v === local[i][j]), `batch ${i} differs`);
      }
      assert.deepEqual(await listFiles(cachedDir(cache)), [...MODEL_FILES].sort());
      for (const f of MODEL_FILES) {
        assert.deepEqual(
          await Deno.readFile(join(cachedDir(cache), f)),
          await Deno.readFile(join(FIXTURE, f)),
          f,
        );
      }
      // Second load: from the cache, no request; HF_HUB_OFFLINE=1 is fine with a full cache.
      const again = await batches(REPO, 1);
      Deno.env.set("HF_HUB_OFFLINE", "1");
      assert.equal(await resolveModelDirectory(REPO), cachedDir(cache));
      assert.equal(hub.requests.length, MODEL_FILES.length + 1, "the cache is used");
      assert.ok(again[0].every((v, j) => v === local[0][j]));
    });
  },
);

Deno.test("hub: a missing required file names the file and the repo", async () => {
  await withHub({ missing: ["tokenizer_config.json"] }, async (_hub, cache) => {
    await assert.rejects(
      resolveModelDirectory(REPO),
      (e: Error) =>
        e instanceof ModelLoadError &&
        /^test-org\/tiny-gpt2: tokenizer_config\.json not found on the hub at http:\/\/127\.0\.0\.1:\d+ \(revision main\)/
          .test(e.message),
    );
    assert.deepEqual(await listFiles(cachedDir(cache)), ["config.json", "tokenizer.json"]);
  });
});

Deno.test("hub: an unreachable host gives a clear offline error", async () => {
  await withHub({}, async (_hub, cache) => {
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const endpoint = `http://127.0.0.1:${closed.addr.port}`;
    closed.close(); // nothing listens there now: connection refused
    Deno.env.set("HF_ENDPOINT", endpoint);
    await assert.rejects(
      resolveModelDirectory(REPO),
      (e: Error) =>
        e instanceof ModelLoadError &&
        e.message.startsWith(
          `no local directory named ${REPO} and the hub at ${endpoint} is unreachable: `,
        ),
    );
    assert.deepEqual(await listFiles(cache), []);
  });
});

Deno.test("hub: HF_HUB_OFFLINE=1 never makes a request", lmTest, async () => {
  await withHub({}, async (hub, cache) => {
    Deno.env.set("HF_HUB_OFFLINE", "1");
    const source = new ModelActivationSource(sourceConfig(REPO), 64);
    await assert.rejects(
      source.nextBatch(32),
      (e: Error) =>
        e instanceof ModelLoadError &&
        e.message.includes(`no local directory named ${REPO}, and HF_HUB_OFFLINE is set`) &&
        e.message.includes(MODEL_FILES.join(", ")),
    );
    await source.close();
    assert.deepEqual(hub.requests, []);
    assert.deepEqual(await listFiles(cache), []);
  });
});

Deno.test("hub: an interrupted download leaves nothing that counts as cached", async () => {
  await withHub({ truncated: ["onnx/model.onnx"] }, async (hub, cache) => {
    await assert.rejects(
      downloadFromHub(REPO),
      (e: Error) =>
        e instanceof ModelLoadError &&
        /^test-org\/tiny-gpt2: the download of onnx\/model\.onnx from the hub at .* was interrupted/
          .test(e.message),
    );
    // No model.onnx and no temporary file left behind.
    assert.deepEqual(
      await listFiles(cachedDir(cache)),
      ["config.json", "tokenizer.json", "tokenizer_config.json"],
    );
    // The next attempt fetches only what is missing.
    hub.files.truncated = [];
    hub.requests.length = 0;
    assert.equal(await downloadFromHub(REPO), cachedDir(cache));
    assert.deepEqual(hub.requests, [
      `GET /${REPO}/resolve/main/onnx/model.onnx`,
      `HEAD /${REPO}/resolve/main/${EXTERNAL_DATA_FILE}`,
    ]);
    assert.deepEqual(
      await Deno.readFile(join(cachedDir(cache), "onnx/model.onnx")),
      await Deno.readFile(join(FIXTURE, "onnx/model.onnx")),
    );
  });
});

Deno.test("hub: a repo with ONNX external data is refused before downloading it", async () => {
  await withHub({ extra: [EXTERNAL_DATA_FILE] }, async (hub) => {
    await assert.rejects(
      downloadFromHub(REPO),
      /onnx\/model\.onnx_data \(ONNX external data.*does not support yet; not downloading it/,
    );
    assert.ok(!hub.requests.includes(`GET /${REPO}/resolve/main/${EXTERNAL_DATA_FILE}`));
  });
});
