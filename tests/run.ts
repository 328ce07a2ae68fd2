/**
 * The project's test command (`deno task test`): picks the WebGPU backend explicitly, runs every
 * `tests/*_test.ts` serially (parallel GPU test processes crashed at exit on Mesa, PLATFORM.md),
 * then the quick benchmark whose report CI publishes (SKIP_BENCH=1 skips it), and ends with one
 * summary line `N passed, N failed`.
 */
import { existsSync } from "node:fs";

/** Vulkan (lavapipe) when its driver is installed, else OpenGL (llvmpipe), unless set explicitly. */
function chooseBackend(): string {
  const chosen = Deno.env.get("DENO_WEBGPU_BACKEND");
  if (chosen) return chosen;
  const lavapipe = [
    "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json",
    "/usr/share/vulkan/icd.d/lvp_icd.aarch64.json",
  ];
  return lavapipe.some((p) => existsSync(p)) ? "vulkan" : "gl";
}

const backend = chooseBackend();
console.log(`WebGPU backend: ${backend} (set DENO_WEBGPU_BACKEND=vulkan|gl to choose)`);
const env: Record<string, string> = { DENO_WEBGPU_BACKEND: backend, NO_COLOR: "1" };
// Mesa's drivers complain on stderr when no runtime dir is set; give them a private one.
if (!Deno.env.get("XDG_RUNTIME_DIR")) {
  env.XDG_RUNTIME_DIR = await Deno.makeTempDir({ prefix: "xdg-" });
}

const child = new Deno.Command(Deno.execPath(), {
  args: ["test", "-A", ...Deno.args, "tests/"],
  env,
  stdout: "piped",
  stderr: "inherit",
}).spawn();

// Stream the output while keeping the last summary line Deno prints ("ok | 12 passed | 0 failed").
let summary = "";
const decoder = new TextDecoder();
for await (const chunk of child.stdout) {
  const text = decoder.decode(chunk, { stream: true });
  Deno.stdout.writeSync(chunk);
  for (const line of text.split("\n")) if (/\d+ passed \| \d+ failed/.test(line)) summary = line;
}
const { code } = await child.status;
let passed = Number(/(\d+) passed/.exec(summary)?.[1] ?? 0);
let failed = Number(/(\d+) failed/.exec(summary)?.[1] ?? (code === 0 ? 0 : 1));

// CI publishes the quick benchmark: run it after the tests and print its report. It counts as
// one more check (it must run to completion); its numbers are reported, never asserted.
const benchCheck = await quickBench();
if (benchCheck) passed++;
else failed++;
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(code === 0 && benchCheck && passed > 0 ? 0 : 1);

/** `deno task bench --quick` into a temporary directory; prints the Markdown report. */
async function quickBench(): Promise<boolean> {
  if (Deno.env.get("SKIP_BENCH") === "1") {
    console.log("\nquick benchmark skipped (SKIP_BENCH=1)");
    return true;
  }
  const dir = await Deno.makeTempDir({ prefix: "bench-quick-" });
  console.log(
    "\n=== deno task bench --quick (report below; bench/report.md holds the full-size run) ===",
  );
  const bench = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "bench/main.ts",
      "--quick",
      "--md",
      `${dir}/report.md`,
      "--json",
      `${dir}/report.json`,
    ],
    env,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const ok = bench.code === 0;
  if (ok) console.log(await Deno.readTextFile(`${dir}/report.md`));
  else {console.log(
      new TextDecoder().decode(bench.stdout),
      `\nquick benchmark FAILED (exit ${bench.code})`,
    );}
  await Deno.remove(dir, { recursive: true });
  return ok;
}
