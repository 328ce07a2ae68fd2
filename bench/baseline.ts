/**
 * Same-run PyTorch baseline: runs `bench/torch_baseline.py` (the dense SAELens 6.18 training step
 * in plain torch: every loss term, autograd backward, clip_grad_norm_, Adam) at the bench's shape
 * with a Python that has torch. Never fails the bench: without Python or torch, or when the script
 * fails or times out, the result says `available: false` and why.
 */
import { DEAD_FRACTION } from "./train_step.ts";

export interface TorchShape {
  batch: number;
  d_in: number;
  d_sae: number;
  k: number;
  steps: number;
}

export interface TorchStepResult {
  arch: string;
  batch: number;
  d_in: number;
  d_sae: number;
  k: number;
  tokens_per_s: number;
  ms_per_step: number;
}

export interface TorchBaseline {
  available: boolean;
  reason?: string;
  python?: string;
  torch_version?: string;
  threads?: number;
  /** The BLAS shared libraries the Python process loaded. */
  blas?: string;
  /** The environment it ran under (OpenBLAS/OMP/malloc variables; null = unset). */
  env?: Record<string, string | null>;
  /** The peer's own [batch, d_in]·[d_in, d_sae] GEMM, best of three. */
  gemm?: { m: number; k: number; n: number; gflops: number };
  dead_fraction?: number;
  results: TorchStepResult[];
}

/** The architectures torch_baseline.py implements. */
export const TORCH_ARCHS = [
  "standard",
  "topk",
  "batchtopk",
  "matryoshka_batchtopk",
  "jumprelu",
  "gated",
];

const SCRIPT = new URL("./torch_baseline.py", import.meta.url).pathname;
/** Debian's python3-torch lives under /usr/bin/python3; `python3` on PATH may be another one. */
const CANDIDATES = ["/usr/bin/python3", "python3"];
const THREADS = 2;

/** The child's environment: 2 BLAS threads, and neither of the variables that slow OpenBLAS. */
function childEnv(): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  return {
    ...env,
    OPENBLAS_NUM_THREADS: String(THREADS),
    OMP_NUM_THREADS: String(THREADS),
    // Keep freed multi-MB tensors in the heap instead of unmapping them after every op, so that
    // each step does not re-fault its activations (about 1.4x faster at the reference shape).
    MALLOC_MMAP_THRESHOLD_: "4294967296",
    MALLOC_TRIM_THRESHOLD_: "4294967296",
    MALLOC_TOP_PAD_: "1073741824",
    PYTHONDONTWRITEBYTECODE: "1",
  };
}

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

async function run(cmd: string, args: string[], timeoutMs: number): Promise<Ran> {
  const child = new Deno.Command(cmd, {
    args,
    env: childEnv(),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
  }, timeoutMs);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    return {
      code: out.code,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}

const tail = (s: string, n = 400) => s.trim().slice(-n);

/** The first candidate Python that imports torch, or why none did. */
async function findPython(): Promise<{ python?: string; reason: string }> {
  const reasons: string[] = [];
  for (const python of CANDIDATES) {
    try {
      const r = await run(python, ["-c", "import torch; print(torch.__version__)"], 60_000);
      if (r.code === 0) return { python, reason: "" };
      reasons.push(
        `${python}: ${r.timedOut ? "timed out importing torch" : tail(r.stderr, 200)}`,
      );
    } catch (e) {
      reasons.push(`${python}: ${e instanceof Deno.errors.NotFound ? "not found" : String(e)}`);
    }
  }
  return {
    reason: `no Python with torch (${
      reasons.join("; ")
    }); install Debian's python3-torch and libopenblas0-pthread`,
  };
}

/**
 * Times the PyTorch dense step for each architecture at `shape`. `timeoutMs` bounds the whole
 * script run (default: 10 minutes).
 */
export async function torchBaseline(
  shape: TorchShape,
  archs: string[],
  timeoutMs = 600_000,
): Promise<TorchBaseline> {
  archs = archs.filter((a) => TORCH_ARCHS.includes(a));
  if (archs.length === 0) {
    return { available: false, reason: "no architecture the baseline implements", results: [] };
  }
  const { python, reason } = await findPython();
  if (!python) return { available: false, reason, results: [] };
  const args = [
    SCRIPT,
    "--batch",
    String(shape.batch),
    "--d-in",
    String(shape.d_in),
    "--d-sae",
    String(shape.d_sae),
    "--k",
    String(shape.k),
    "--steps",
    String(shape.steps),
    "--threads",
    String(THREADS),
    "--dead-fraction",
    String(DEAD_FRACTION),
    "--arch",
    archs.join(","),
  ];
  let r: Ran;
  try {
    r = await run(python, args, timeoutMs);
  } catch (e) {
    return { available: false, python, reason: `could not run ${python}: ${e}`, results: [] };
  }
  if (r.timedOut) {
    return {
      available: false,
      python,
      reason: `torch_baseline.py timed out after ${timeoutMs / 1000} s`,
      results: [],
    };
  }
  if (r.code !== 0) {
    return {
      available: false,
      python,
      reason: `torch_baseline.py exited with ${r.code}: ${tail(r.stderr)}`,
      results: [],
    };
  }
  try {
    const lines = r.stdout.trim().split("\n");
    const parsed = JSON.parse(lines[lines.length - 1]) as Omit<TorchBaseline, "available">;
    if (!Array.isArray(parsed.results)) throw new Error("no results array");
    return { available: true, python, ...parsed };
  } catch (e) {
    return {
      available: false,
      python,
      reason: `could not parse torch_baseline.py output (${e}): ${tail(r.stdout, 200)}`,
      results: [],
    };
  }
}

/**
 * One baseline from per-architecture runs: the first available run's description (Python,
 * torch, BLAS, its GEMM) with every run's results; unavailable only when no run was available.
 */
export function mergeBaselines(runs: TorchBaseline[]): TorchBaseline {
  const ran = runs.filter((r) => r.available);
  if (ran.length === 0) {
    return runs[0] ?? { available: false, reason: "no architecture was benchmarked", results: [] };
  }
  return { ...ran[0], results: ran.flatMap((r) => r.results) };
}
