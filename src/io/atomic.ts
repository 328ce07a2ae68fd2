/**
 * Crash-safe writes: data goes to a temporary sibling, is fsynced, then renamed into place, so a
 * reader (or a resumed run) sees either the old contents or the new, never a partial file.
 */

/** Writes all of `bytes` to a new file and fsyncs it. */
export async function writeFileSynced(path: string, bytes: Uint8Array): Promise<void> {
  const file = await Deno.open(path, { write: true, createNew: true });
  try {
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.sync(); // durable before a rename publishes it
  } finally {
    file.close();
  }
}

/** Replaces `path` with `bytes` atomically. */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const temp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await writeFileSynced(temp, bytes);
    await Deno.rename(temp, path);
  } catch (e) {
    await Deno.remove(temp).catch(() => {});
    throw e;
  }
}

/**
 * Replaces directory `dir` with one holding `files` (name → bytes): built in a temporary
 * sibling, then swapped in by rename (the old directory is moved aside first, then removed).
 */
export async function writeDirectoryAtomic(
  dir: string,
  files: Record<string, Uint8Array>,
): Promise<void> {
  const suffix = crypto.randomUUID().slice(0, 8);
  const temp = `${dir}.tmp-${suffix}`;
  await Deno.mkdir(temp, { recursive: true });
  try {
    for (const [name, bytes] of Object.entries(files)) {
      await writeFileSynced(`${temp}/${name}`, bytes);
    }
    const old = `${dir}.old-${suffix}`;
    const hadOld = await Deno.stat(dir).then(() => true, () => false);
    if (hadOld) await Deno.rename(dir, old);
    await Deno.rename(temp, dir);
    if (hadOld) await Deno.remove(old, { recursive: true });
  } catch (e) {
    await Deno.remove(temp, { recursive: true }).catch(() => {});
    throw e;
  }
}
