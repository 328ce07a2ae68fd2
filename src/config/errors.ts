/**
 * Config errors: one `ConfigError` that names the source, the field path, the value received and
 * what was expected; a zod error map that words every issue that way; and the small field
 * builders the config schemas share so their messages read the same.
 * @module
 */
import { z } from "zod";

/** A config that does not validate; `issues` holds one line per problem, `message` joins them. */
export class ConfigError extends Error {
  /** One `<source>.<path>: <problem>` line per problem. */
  readonly issues: readonly string[];

  constructor(issues: readonly string[]) {
    super(issues.length === 1 ? issues[0] : `${issues.length} problems:\n${issues.join("\n")}`);
    this.name = "ConfigError";
    this.issues = issues;
  }
}

/** Short printable form of a received value ("nothing (field missing)" for undefined). */
export function describeValue(value: unknown): string {
  if (value === undefined) return "nothing (the field is missing)";
  if (typeof value === "number" || typeof value === "boolean" || value === null) {
    return String(value);
  }
  if (typeof value === "bigint") return `${value}n`;
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  const shown = text.length > 80 ? `${text.slice(0, 77)}...` : text;
  return typeof value === "string" ? `the string ${shown}` : shown;
}

/** Edit distance, for "did you mean" suggestions. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

/** The closest candidates to `word`: by edit distance, else by a shared prefix (4+ letters). */
export function closest(word: string, candidates: readonly string[], max = 2): string[] {
  const w = word.toLowerCase();
  const limit = Math.max(2, Math.floor(w.length / 3));
  const near = candidates
    .map((c) => ({ c, d: editDistance(w, c.toLowerCase()) }))
    .filter(({ d }) => d <= limit)
    .sort((x, y) => x.d - y.d)
    .map(({ c }) => c);
  const prefixed = candidates.filter((c) => {
    const l = c.toLowerCase();
    return Math.min(l.length, w.length) >= 4 && (l.startsWith(w) || w.startsWith(l));
  });
  return (near.length > 0 ? near : prefixed).slice(0, max);
}

/** ` did you mean "a" or "b"?`, or "" when nothing is close. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const near = closest(word, candidates);
  return near.length === 0 ? "" : `; did you mean ${near.map((c) => `"${c}"`).join(" or ")}?`;
}

/** Quoted, comma-separated list: `"a", "b", "c"`. */
export function quoteList(values: readonly unknown[]): string {
  return values.map((v) => JSON.stringify(v)).join(", ");
}

/**
 * One line per unknown key: `unknown field "kk"<context>; did you mean "k"?`, plus `owner(key)`
 * (e.g. "it belongs to architecture topk") when the key is valid somewhere else.
 */
export function unknownFieldsMessage(
  keys: readonly string[],
  known: readonly string[],
  context = "",
  owner?: (key: string) => string | undefined,
): string {
  return keys.map((key) => {
    const elsewhere = owner?.(key);
    const hint = elsewhere ? ` (${elsewhere})` : didYouMean(key, known);
    return `unknown field "${key}"${context}${hint}`;
  }).join("\n");
}

const TYPE_WORDS: Record<string, string> = {
  number: "a number",
  int: "an integer",
  string: "a string",
  boolean: "true or false",
  object: "an object",
  array: "an array",
  null: "null",
  record: "an object",
};

type RawIssue = z.core.$ZodRawIssue;

/** Zod error map: words every issue as `expected <what>, got <value>`. */
export function issueMessage(iss: RawIssue): string {
  const got = `got ${describeValue(iss.input)}`;
  switch (iss.code) {
    case "invalid_type":
      return `expected ${TYPE_WORDS[iss.expected] ?? iss.expected}, ${got}`;
    case "invalid_value": {
      const guess = typeof iss.input === "string"
        ? didYouMean(iss.input, iss.values.filter((v): v is string => typeof v === "string"))
        : "";
      const what = iss.values.length === 1
        ? JSON.stringify(iss.values[0])
        : `one of ${quoteList(iss.values)}`;
      return `expected ${what}, ${got}${guess}`;
    }
    case "too_small":
    case "too_big": {
      const small = iss.code === "too_small";
      const bound = small ? iss.minimum : iss.maximum;
      if (iss.origin === "array") {
        return `expected ${small ? "at least" : "at most"} ${bound} item(s), ${got}`;
      }
      const op = small ? (iss.inclusive ? ">=" : ">") : (iss.inclusive ? "<=" : "<");
      return `expected a number ${op} ${bound}, ${got}`;
    }
    case "unrecognized_keys": {
      const shape = (iss.inst as { _zod?: { def?: { shape?: object } } } | undefined)?._zod?.def
        ?.shape;
      return unknownFieldsMessage(iss.keys, shape ? Object.keys(shape) : []);
    }
    case "invalid_union": {
      const disc = (iss as { discriminator?: string }).discriminator;
      if (disc) return `unknown ${disc}, ${got}`;
      return `expected one of several forms, ${got}`;
    }
    case "not_multiple_of":
      return `expected a multiple of ${iss.divisor}, ${got}`;
    case "custom":
      return iss.message ?? `invalid value, ${got}`;
    default:
      return `invalid value, ${got}`;
  }
}

/** The error map in zod's `error` option form (schema-level messages still take precedence). */
export const configErrorMap: z.core.$ZodErrorMap = (iss) => issueMessage(iss as RawIssue);

/** Path as `a.b.0.c`, prefixed by the source; the source alone for the root. */
export function formatPath(source: string, path: readonly PropertyKey[]): string {
  return [source, ...path.map(String)].filter((p) => p !== "").join(".");
}

/**
 * Formats zod issues into `<source>.<path>: <message>` lines, adding ` (fix: ...)` from `fixes`
 * (keyed by the last path segment that is a field name) where the message has none.
 */
export function formatIssues(
  issues: readonly z.core.$ZodIssue[],
  source: string,
  fixes: Readonly<Record<string, string>> = {},
): string[] {
  const lines: string[] = [];
  for (const issue of issues) {
    const field = [...issue.path].reverse().find((p): p is string => typeof p === "string");
    const fix = field !== undefined && Object.hasOwn(fixes, field) ? fixes[field] : undefined;
    for (const part of issue.message.split("\n")) {
      const withFix = fix && !part.includes("(fix:") && issue.code !== "unrecognized_keys"
        ? `${part} (fix: ${fix})`
        : part;
      lines.push(`${formatPath(source, issue.path)}: ${withFix}`);
    }
  }
  return lines;
}

/**
 * Parses `value` with `schema`, throwing a `ConfigError` whose lines name `source` and each
 * offending path. `fixes` maps field names to a one-line remedy.
 */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  value: unknown,
  source: string,
  fixes: Readonly<Record<string, string>> = {},
): z.output<S> {
  const result = schema.safeParse(value, { reportInput: true, error: configErrorMap });
  if (result.success) return result.data;
  throw new ConfigError(formatIssues(result.error.issues, source, fixes));
}

// Field builders: the shared number/flag types, each failing with an "expected ..." message.

/** Error option that words a failed check as `expected <what>, got <value>`. */
function expecting(what: string) {
  return {
    error: (iss: { input?: unknown }) => `expected ${what}, got ${describeValue(iss.input)}`,
  };
}

/** A positive integer. */
export function positiveInt() {
  const e = expecting("a positive integer");
  return z.number(e).int(e).positive(e);
}

/** An integer >= 0. */
export function nonNegativeInt() {
  const e = expecting("an integer >= 0");
  return z.number(e).int(e).nonnegative(e);
}

/** A number > 0 (zod numbers are finite). */
export function positiveNumber() {
  const e = expecting("a number > 0");
  return z.number(e).positive(e);
}

/** A number >= 0. */
export function nonNegativeNumber() {
  const e = expecting("a number >= 0");
  return z.number(e).nonnegative(e);
}

/** A number in [0, 1) (Adam betas). */
export function unitIntervalOpen() {
  const e = expecting("a number in [0, 1)");
  return z.number(e).nonnegative(e).lt(1, e);
}

/** A number in [0, 1] (EMA rates). */
export function unitInterval() {
  const e = expecting("a number in [0, 1]");
  return z.number(e).nonnegative(e).lte(1, e);
}

/** true or false. */
export function flag() {
  return z.boolean(expecting("true or false"));
}
