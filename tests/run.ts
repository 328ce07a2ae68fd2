/**
 * The project's test command (`deno task test`): picks the WebGPU backend explicitly, runs every
 * `tests/*_test.ts` serially (parallel GPU test processes crashed at exit on Mesa, PLATFORM.md)
 * and ends with one summary line `N passed, N failed`.
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
const passed = Number(/(\d+) passed/.exec(summary)?.[1] ?? 0);
const failed = Number(/(\d+) failed/.exec(summary)?.[1] ?? (code === 0 ? 0 : 1));
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(code === 0 && passed > 0 ? 0 : 1);
