/** Loads WGSL kernel sources from the top-level `kernels/` folder (read once per process). */
const cache = new Map<string, string>();

/**
 * The text of `kernels/<name>.wgsl`, with each `// include <file>` line replaced by the text of
 * `kernels/<file>.wgsl` (helpers several kernels share) and its `// unroll` lines written out
 * (`unrollWgsl`).
 * `consts` replaces the values of `const NAME = N;` declarations first: unrolled bounds are
 * compile-time, so a kernel specialised on one (a register array's length) gets its own source.
 */
export function wgsl(name: string, consts: Record<string, number> = {}): string {
  const key = `${name}|${JSON.stringify(consts)}`;
  let code = cache.get(key);
  if (code === undefined) {
    let source = readKernel(name).replace(
      /^\/\/ include (\w+)$/gm,
      (_, file: string) => readKernel(file),
    );
    for (const [constName, value] of Object.entries(consts)) {
      const declaration = new RegExp(`^const ${constName} = \\d+u?;`, "m");
      if (!declaration.test(source)) {
        throw new Error(`wgsl ${name}: no "const ${constName} = N;" to replace`);
      }
      source = source.replace(declaration, `const ${constName} = ${value}u;`);
    }
    code = unrollWgsl(source);
    cache.set(key, code);
  }
  return code;
}

/** Quotients below this `quotient` in kernels/quotient.wgsl computes exactly (row indices). */
export const QUOTIENT_LIMIT = 2 ** 22;

function readKernel(file: string): string {
  return Deno.readTextFileSync(new URL(`../../kernels/${file}.wgsl`, import.meta.url));
}

/** Packs uniform fields (u32 first, then f32) into the layout the kernels' `Params` structs use. */
export function params(u32s: readonly number[], f32s: readonly number[] = []): ArrayBuffer {
  const buffer = new ArrayBuffer(4 * (u32s.length + f32s.length));
  new Uint32Array(buffer, 0, u32s.length).set(u32s);
  new Float32Array(buffer, 4 * u32s.length, f32s.length).set(f32s);
  return buffer;
}

/** Workgroups needed to cover `n` items with `size` per group. */
export function groups(n: number, size: number): number {
  return Math.ceil(n / size);
}

/**
 * Expands lines ending in `// unroll i<ROWS j<4 ...`: the line is repeated for every combination
 * (first variable outermost) with `{i}`, `{j}` replaced. Bounds are numbers or `const` names
 * declared in the same source.
 */
export function unrollWgsl(source: string): string {
  const constants = new Map<string, number>();
  for (const [, name, value] of source.matchAll(/^const (\w+) = (\d+)u?;/gm)) {
    constants.set(name, Number(value));
  }
  const bound = (text: string): number => {
    const value = /^\d+$/.test(text) ? Number(text) : constants.get(text);
    if (value === undefined) throw new Error(`unrollWgsl: unknown bound ${text}`);
    return value;
  };
  return source.split("\n").flatMap((line) => {
    const match = line.match(/^(.*?)\s*\/\/ unroll ((?:\w+<\w+\s*)+)$/);
    if (!match) return [line];
    let lines = [match[1]];
    for (const loop of match[2].trim().split(/\s+/)) {
      const [name, limit] = loop.split("<");
      lines = lines.flatMap((text) =>
        Array.from({ length: bound(limit) }, (_, v) => text.replaceAll(`{${name}}`, String(v)))
      );
    }
    return lines;
  }).join("\n");
}
