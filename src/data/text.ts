/**
 * Local text datasets: a `.txt` or `.jsonl` file, or a directory of them (read in name order,
 * not recursively). Each `.txt` file is one document (one dataset row, as SAELens sees a row of
 * a Hugging Face text dataset); each `.jsonl` line is one document, its `"text"` field.
 * @module
 */
import { extname, join } from "node:path";

/** A missing or malformed dataset file; the message names the file (and line). */
export class DatasetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DatasetError";
  }
}

export interface TextDocument {
  readonly text: string;
  /** `file` or `file:line`, for messages. */
  readonly where: string;
}

export interface TextDataset {
  readonly path: string;
  readonly files: readonly string[];
  readonly documents: readonly TextDocument[];
}

const EXTENSIONS = new Set([".txt", ".jsonl"]);

/** The dataset files at `path`: the file itself, or a directory's .txt/.jsonl files by name. */
export async function listDatasetFiles(path: string): Promise<string[]> {
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(path);
  } catch {
    throw new DatasetError(
      `${path}: dataset_path not found (a .txt/.jsonl file or a directory of them)`,
    );
  }
  if (stat.isFile) {
    if (!EXTENSIONS.has(extname(path))) {
      throw new DatasetError(`${path}: dataset files must end in .txt or .jsonl`);
    }
    return [path];
  }
  const files: string[] = [];
  for await (const entry of Deno.readDir(path)) {
    if (entry.isFile && EXTENSIONS.has(extname(entry.name))) files.push(join(path, entry.name));
  }
  files.sort();
  if (files.length === 0) {
    throw new DatasetError(`${path}: the directory has no .txt or .jsonl files`);
  }
  return files;
}

/** Reads every document of the dataset at `path`. */
export async function readTextDataset(path: string): Promise<TextDataset> {
  const files = await listDatasetFiles(path);
  const documents: TextDocument[] = [];
  const decoder = new TextDecoder("utf-8", { fatal: true });
  for (const file of files) {
    let text: string;
    try {
      text = decoder.decode(await Deno.readFile(file));
    } catch (e) {
      if (e instanceof TypeError) throw new DatasetError(`${file}: not valid UTF-8 text`);
      throw new DatasetError(`${file}: cannot read (${(e as Error).message})`);
    }
    if (extname(file) === ".txt") {
      documents.push({ text, where: file });
      continue;
    }
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (line === "") continue;
      let row: unknown;
      try {
        row = JSON.parse(line);
      } catch (e) {
        throw new DatasetError(`${file}:${i + 1}: not valid JSON (${(e as Error).message})`);
      }
      const value = (row as { text?: unknown } | null)?.text;
      if (typeof value !== "string") {
        throw new DatasetError(
          `${file}:${i + 1}: each line must be a JSON object with a string "text" field`,
        );
      }
      documents.push({ text: value, where: `${file}:${i + 1}` });
    }
  }
  if (documents.length === 0) throw new DatasetError(`${path}: the dataset has no documents`);
  return { path, files, documents };
}
