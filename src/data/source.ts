/** What the trainer consumes: batches of activations from some source, resumable by position. */

export interface ActivationSource {
  /** Width of each activation row. */
  readonly dIn: number;
  /** The next [rows, d_in] batch (row-major). Throws when the source is exhausted. */
  nextBatch(rows: number): Promise<Float32Array>;
  /** A JSON-serialisable position; `restore` of it continues the stream exactly. */
  position(): unknown;
  restore(position: unknown): void;
}
