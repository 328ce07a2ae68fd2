/** A GPU buffer with a shape. Element type is 32-bit; `dtype` says how kernels read it. */
import type { Gpu } from "./device.ts";

export type DType = "f32" | "u32" | "i32";

export class Tensor {
  disposed = false;
  constructor(
    readonly gpu: Gpu,
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly dtype: DType,
    /** Views share another tensor's buffer and never release it. */
    readonly isView = false,
  ) {}

  /** The same buffer seen with another shape of equal size. */
  view(shape: readonly number[]): Tensor {
    const size = shape.reduce((a, b) => a * b, 1);
    if (size !== this.size) throw new Error(`view [${shape}] of [${this.shape}]: sizes differ`);
    return new Tensor(this.gpu, this.buffer, shape, this.dtype, true);
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Rows and columns when viewed as a matrix (a vector is one row). */
  get rows(): number {
    return this.shape.length <= 1 ? 1 : this.size / this.shape[this.shape.length - 1];
  }
  get cols(): number {
    return this.shape.length === 0 ? 1 : this.shape[this.shape.length - 1];
  }

  /** Reads the contents back (one sync). */
  read(): Promise<Float32Array> {
    return this.gpu.read(this);
  }

  /** Gives the buffer back to the pool; the tensor must not be used afterwards. */
  dispose(): void {
    if (this.disposed) throw new Error("tensor disposed twice");
    this.disposed = true;
    if (this.isView) return;
    this.gpu.release(this);
  }
}
