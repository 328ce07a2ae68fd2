/**
 * GPU time per compute pass from timestamp queries (the `timestamp-query` feature; lavapipe has
 * it): every dispatch recorded while a `PassTiming` is attached to the Gpu is bracketed by two
 * timestamps, and `read()` resolves them into milliseconds per kernel label. A profiling aid for
 * `deno task bench --passes`; training never attaches one.
 */
export interface PassTime {
  label: string;
  ms: number;
  calls: number;
}

/** Passes per query set (WebGPU allows at most 4096 queries in one set, two per pass). */
const PASSES_PER_SET = 2048;

export class PassTiming {
  private readonly querySets: GPUQuerySet[] = [];
  private readonly labels: string[] = [];

  constructor(private readonly device: GPUDevice) {}

  /** The timestamp writes for the next pass. */
  next(label: string): GPUComputePassTimestampWrites {
    const at = this.labels.length % PASSES_PER_SET;
    if (at === 0) {
      this.querySets.push(
        this.device.createQuerySet({ type: "timestamp", count: 2 * PASSES_PER_SET }),
      );
    }
    this.labels.push(label);
    return {
      querySet: this.querySets[this.querySets.length - 1],
      beginningOfPassWriteIndex: 2 * at,
      endOfPassWriteIndex: 2 * at + 1,
    };
  }

  /** Per-label totals, largest first (submit the recorded work before calling). */
  async read(): Promise<PassTime[]> {
    const count = 2 * this.labels.length;
    if (count === 0) return [];
    const bytes = 8 * count;
    const resolved = this.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const staging = this.device.createBuffer({
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = this.device.createCommandEncoder();
    this.querySets.forEach((set, i) => {
      const queries = Math.min(2 * PASSES_PER_SET, count - 2 * PASSES_PER_SET * i);
      encoder.resolveQuerySet(set, 0, queries, resolved, 16 * PASSES_PER_SET * i);
    });
    encoder.copyBufferToBuffer(resolved, 0, staging, 0, bytes);
    this.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const ns = new BigUint64Array(staging.getMappedRange());
    const totals = new Map<string, PassTime>();
    this.labels.forEach((label, i) => {
      const t = totals.get(label) ?? { label, ms: 0, calls: 0 };
      t.ms += Number(ns[2 * i + 1] - ns[2 * i]) / 1e6;
      t.calls += 1;
      totals.set(label, t);
    });
    staging.destroy();
    resolved.destroy();
    for (const set of this.querySets) set.destroy();
    return [...totals.values()].sort((a, b) => b.ms - a.ms);
  }
}
