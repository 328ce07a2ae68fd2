/**
 * WebGPU device acquisition, command recording and readback.
 *
 * One `Gpu` owns one `GPUDevice`. Kernels record dispatches into a single open command encoder;
 * `flush()` submits it. Nothing is read back unless `read()` is called, so a training step is one
 * submit and no sync.
 */
import { type PassTime, PassTiming } from "./pass_timing.ts";
import { type DType, Tensor } from "./tensor.ts";

/** Thrown when no adapter exists or the device reports an error. */
export class GpuError extends Error {
  override name = "GpuError";
}

const NO_ADAPTER_HELP = "navigator.gpu.requestAdapter() returned null: no WebGPU adapter. " +
  "On Linux without a GPU install Mesa's software drivers: " +
  "`apt-get install -y --no-install-recommends mesa-vulkan-drivers libvulkan1` (lavapipe, Vulkan) " +
  "or `libegl1 libegl-mesa0 libgl1-mesa-dri` (llvmpipe, OpenGL), then pick one with " +
  "DENO_WEBGPU_BACKEND=vulkan|gl.";

/** Limits we ask for: everything the adapter offers that matters for big weight matrices. */
const REQUESTED_LIMITS = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupsPerDimension",
  "maxTextureDimension2D",
] as const;

/** One binding of a dispatch: a whole tensor or buffer, a buffer range, or a texture view. */
export type Binding = Tensor | GPUBuffer | GPUBufferBinding | GPUTextureView;

function bindingResource(b: Binding): GPUBindingResource {
  if (b instanceof Tensor) return { buffer: b.buffer };
  if (b instanceof GPUBuffer) return { buffer: b };
  return b;
}

/** A pipeline plus the shader it came from (kept for error messages). */
export interface Kernel {
  readonly label: string;
  readonly pipeline: GPUComputePipeline;
}

export class Gpu {
  readonly device: GPUDevice;
  readonly adapterInfo: GPUAdapterInfo;
  /** Errors the device raised asynchronously; thrown at the next flush/read. */
  private readonly pendingErrors: string[] = [];
  private encoder: GPUCommandEncoder | null = null;
  private readonly modules = new Map<string, GPUShaderModule>();
  private readonly pipelines = new Map<string, Kernel>();
  /** Released buffers by byte size, reused so a steady training loop allocates nothing. */
  private readonly freeBuffers = new Map<number, GPUBuffer[]>();
  /** Uniform buffers handed out since the last flush; recycled after it. */
  private uniformsInFlight: GPUBuffer[] = [];
  private readonly freeUniforms = new Map<number, GPUBuffer[]>();
  private scopes: Set<Tensor>[] = [];
  /** Bytes currently held in live tensors and their peak, for memory reports. */
  liveBytes = 0;
  peakBytes = 0;
  /** Tests only: pretend storage bindings hold at most this many bytes (forces chunking). */
  maxBindingOverride: number | undefined = undefined;
  /**
   * Which kernel path architectures with a sparse step take: `auto` chooses per step by size
   * and measured density, `always` takes the sparse path wherever it fits, `never` forces the
   * dense GEMMs (parity checks both).
   */
  sparseKernels: "auto" | "always" | "never" = "auto";
  /** When set, every dispatch is timed (see `startPassTiming`). */
  private passTiming: PassTiming | undefined;
  private unused: Tensor | undefined;

  private constructor(device: GPUDevice, info: GPUAdapterInfo) {
    this.device = device;
    this.adapterInfo = info;
    device.addEventListener("uncapturederror", (event) => {
      this.pendingErrors.push((event as GPUUncapturedErrorEvent).error.message);
    });
    device.lost.then((lost) => {
      if (lost.reason !== "destroyed") this.pendingErrors.push(`device lost: ${lost.message}`);
    });
  }

  /** Requests an adapter and a device with the adapter's real limits. */
  static async acquire(options: GPURequestAdapterOptions = {}): Promise<Gpu> {
    if (!("gpu" in navigator) || !navigator.gpu) {
      throw new GpuError("WebGPU is not available in this runtime.");
    }
    const adapter = await navigator.gpu.requestAdapter(options);
    if (!adapter) throw new GpuError(NO_ADAPTER_HELP);
    const requiredLimits: Record<string, number> = {};
    for (const name of REQUESTED_LIMITS) requiredLimits[name] = adapter.limits[name];
    // timestamp-query only lets `deno task bench --passes` time passes; it costs nothing unused.
    const requiredFeatures = [...adapter.features].filter((f) =>
      f === "shader-f16" || f === "timestamp-query"
    ) as GPUFeatureName[];
    const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
    return new Gpu(device, adapter.info);
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /** Bytes one storage binding may hold (the device limit unless a test overrides it). */
  get maxBindingBytes(): number {
    return this.maxBindingOverride ?? this.limits.maxStorageBufferBindingSize;
  }

  /**
   * A zero [4] tensor (16 bytes, the least a vec4 view accepts) to bind where an entry point
   * declares a binding that this dispatch never touches (pipelines with auto layouts still need
   * every declared binding bound).
   */
  get unusedBinding(): Tensor {
    return this.unused ??= this.keep(this.zeros([4]));
  }

  /** Times every dispatch from now on with timestamp queries (needs `timestamp-query`). */
  startPassTiming(): void {
    if (!this.device.features.has("timestamp-query")) {
      throw new GpuError("this adapter has no timestamp-query feature: passes cannot be timed");
    }
    this.passTiming = new PassTiming(this.device);
  }

  /** Stops timing; per-kernel GPU milliseconds since `startPassTiming`, largest first. */
  async stopPassTiming(): Promise<PassTime[]> {
    const timing = this.passTiming;
    this.passTiming = undefined;
    this.flush();
    return timing ? await timing.read() : [];
  }

  /** One line naming the adapter, for reports. */
  describe(): string {
    const i = this.adapterInfo;
    return [i.vendor, i.architecture, i.device, i.description].filter((s) => s).join(" / ");
  }

  /**
   * Texels per row of flat staging textures (src/kernels/staging.ts): the widest side whose rows
   * are a multiple of 256 bytes (buffer-to-texture copies need that) and which is neither a power
   * of two nor a multiple of 256 texels (see `textureSide`): 16368 where textures reach 16384.
   */
  get flatWidth(): number {
    return this.limits.maxTextureDimension2D - 16;
  }

  /** Compiles (once) and returns the pipeline for `entryPoint` of a WGSL source. */
  kernel(
    label: string,
    code: string,
    entryPoint = "main",
    constants: Record<string, number> = {},
  ): Kernel {
    const key = `${label}|${entryPoint}|${JSON.stringify(constants)}`;
    let kernel = this.pipelines.get(key);
    if (kernel) return kernel;
    let module = this.modules.get(label);
    if (!module) {
      module = this.device.createShaderModule({ label, code });
      this.modules.set(label, module);
    }
    // Kernels that address flat staging textures take their width as a pipeline constant.
    const all = code.includes("override FLAT_WIDTH")
      ? { FLAT_WIDTH: this.flatWidth, ...constants }
      : constants;
    const pipeline = this.device.createComputePipeline({
      label: `${label}:${entryPoint}`,
      layout: "auto",
      compute: { module, entryPoint, constants: all },
    });
    kernel = { label: `${label}:${entryPoint}`, pipeline };
    this.pipelines.set(key, kernel);
    return kernel;
  }

  // ---- memory ---------------------------------------------------------------------------------

  /** Allocates an uninitialised tensor (contents are whatever the pooled buffer held). */
  empty(shape: readonly number[], dtype: DType = "f32"): Tensor {
    const count = shape.reduce((a, b) => a * b, 1);
    const bytes = Math.max(4, count * 4);
    if (bytes > this.limits.maxBufferSize) {
      throw new GpuError(
        `tensor [${shape}] needs ${bytes} bytes > adapter maxBufferSize ${this.limits.maxBufferSize}`,
      );
    }
    const buffer = this.freeBuffers.get(bytes)?.pop() ??
      this.device.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST |
          GPUBufferUsage.INDIRECT,
      });
    this.liveBytes += bytes;
    this.peakBytes = Math.max(this.peakBytes, this.liveBytes);
    const tensor = new Tensor(this, buffer, shape, dtype);
    this.scopes.at(-1)?.add(tensor);
    return tensor;
  }

  /** Allocates a tensor filled with zeros. */
  zeros(shape: readonly number[], dtype: DType = "f32"): Tensor {
    const t = this.empty(shape, dtype);
    this.clear(t);
    return t;
  }

  /** Zeroes a tensor, in order with the work recorded around it. */
  clear(t: Tensor): void {
    this.commandEncoder().clearBuffer(t.buffer);
  }

  /** Uploads host data into a new tensor. */
  upload(
    data: Float32Array | Uint32Array | Int32Array,
    shape: readonly number[] = [data.length],
  ): Tensor {
    const count = shape.reduce((a, b) => a * b, 1);
    if (count !== data.length) {
      throw new GpuError(`upload: shape [${shape}] holds ${count} values, got ${data.length}`);
    }
    const dtype: DType = data instanceof Float32Array
      ? "f32"
      : data instanceof Uint32Array
      ? "u32"
      : "i32";
    const t = this.empty(shape, dtype);
    this.write(t, data);
    return t;
  }

  /** Overwrites a tensor's contents. Ordered before the next flushed command buffer. */
  write(t: Tensor, data: Float32Array | Uint32Array | Int32Array): void {
    if (data.length !== t.size) {
      throw new GpuError(`write: tensor holds ${t.size} values, got ${data.length}`);
    }
    // Work recorded earlier must see the old contents: submit it before the queue write lands.
    this.flush();
    this.device.queue.writeBuffer(t.buffer, 0, data.buffer, data.byteOffset, data.byteLength);
  }

  /** Returns a tensor's buffer to the pool. */
  release(t: Tensor): void {
    this.liveBytes -= t.buffer.size;
    const list = this.freeBuffers.get(t.buffer.size) ?? [];
    list.push(t.buffer);
    this.freeBuffers.set(t.buffer.size, list);
  }

  /**
   * Runs `body`, then releases every tensor allocated inside it except the ones it returns
   * (like tf.tidy): intermediates of a step go back to the pool without bookkeeping.
   */
  scope<T>(body: () => T): T {
    const created = new Set<Tensor>();
    this.scopes.push(created);
    let result: T;
    try {
      result = body();
    } finally {
      this.scopes.pop();
    }
    const kept = new Set<Tensor>();
    collectTensors(result, kept);
    for (const t of created) {
      if (kept.has(t)) this.scopes.at(-1)?.add(t);
      else if (!t.disposed) t.dispose();
    }
    return result;
  }

  /** Exempts a tensor created inside `scope()` from release at the scope's end (caches). */
  keep(t: Tensor): Tensor {
    for (const scope of this.scopes) scope.delete(t);
    return t;
  }

  // ---- recording ------------------------------------------------------------------------------

  private commandEncoder(): GPUCommandEncoder {
    this.encoder ??= this.device.createCommandEncoder();
    return this.encoder;
  }

  /** A uniform buffer holding `data`, valid for the work recorded until the next flush. */
  private uniform(data: ArrayBuffer): GPUBuffer {
    const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
    const buffer = this.freeUniforms.get(size)?.pop() ??
      this.device.createBuffer({ size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    this.device.queue.writeBuffer(buffer, 0, data);
    this.uniformsInFlight.push(buffer);
    return buffer;
  }

  /**
   * Records one dispatch. Binding 0 is the uniform block `params` (when given); storage
   * bindings follow from 1 in the order listed. `undefined` skips a binding number the entry
   * point does not use (auto layouts omit unused bindings).
   */
  dispatch(
    kernel: Kernel,
    bindings: readonly (Binding | undefined)[],
    workgroups: readonly [number, number?, number?] | Tensor,
    params?: ArrayBuffer,
  ): void {
    const entries: GPUBindGroupEntry[] = [];
    if (params) entries.push({ binding: 0, resource: { buffer: this.uniform(params) } });
    bindings.forEach((b, i) => {
      if (b) entries.push({ binding: i + 1, resource: bindingResource(b) });
    });
    const bindGroup = this.device.createBindGroup({
      layout: kernel.pipeline.getBindGroupLayout(0),
      entries,
    });
    const pass = this.commandEncoder().beginComputePass({
      label: kernel.label,
      timestampWrites: this.passTiming?.next(kernel.label),
    });
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, bindGroup);
    if (workgroups instanceof Tensor) {
      // Sizes computed on the GPU: a [3] u32 tensor of workgroup counts (no readback).
      pass.dispatchWorkgroupsIndirect(workgroups.buffer, 0);
    } else {
      const [x, y = 1, z = 1] = workgroups;
      const max = this.limits.maxComputeWorkgroupsPerDimension;
      if (x > max || y > max || z > max) {
        throw new GpuError(
          `${kernel.label}: dispatch [${x},${y},${z}] exceeds ${max} workgroups per dimension`,
        );
      }
      if (x > 0 && y > 0 && z > 0) pass.dispatchWorkgroups(x, y, z);
    }
    pass.end();
  }

  /** Records a buffer-to-buffer copy. */
  copy(src: Tensor, dst: Tensor, srcOffsetElems = 0, dstOffsetElems = 0, count = src.size): void {
    this.commandEncoder().copyBufferToBuffer(
      src.buffer,
      srcOffsetElems * 4,
      dst.buffer,
      dstOffsetElems * 4,
      count * 4,
    );
  }

  /** Records a copy of buffer rows into a texture (GEMM operand packing). */
  copyBufferToTexture(
    source: GPUTexelCopyBufferInfo,
    destination: GPUTexelCopyTextureInfo,
    size: GPUExtent3DStrict,
  ): void {
    this.commandEncoder().copyBufferToTexture(source, destination, size);
  }

  /** Submits everything recorded so far as one command buffer. */
  flush(): void {
    this.throwPendingErrors();
    if (!this.encoder) return;
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    for (const u of this.uniformsInFlight) {
      const list = this.freeUniforms.get(u.size) ?? [];
      list.push(u);
      this.freeUniforms.set(u.size, list);
    }
    this.uniformsInFlight = [];
  }

  /** Reads several tensors back with a single sync (each sync costs ~10 ms on Mesa). */
  async readMany(tensors: readonly Tensor[]): Promise<Float32Array[]> {
    const sizes = tensors.map((t) => t.size * 4);
    const total = sizes.reduce((a, b) => a + b, 0);
    const staging = this.device.createBuffer({
      size: Math.max(4, total),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    let offset = 0;
    const encoder = this.commandEncoder();
    tensors.forEach((t, i) => {
      encoder.copyBufferToBuffer(t.buffer, 0, staging, offset, sizes[i]);
      offset += sizes[i];
    });
    this.flush();
    await staging.mapAsync(GPUMapMode.READ);
    this.throwPendingErrors();
    const all = new Float32Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    offset = 0;
    return sizes.map((size) => {
      const view = all.subarray(offset / 4, (offset + size) / 4);
      offset += size;
      return view;
    });
  }

  /** Reads one tensor back. */
  async read(t: Tensor): Promise<Float32Array> {
    return (await this.readMany([t]))[0];
  }

  /** Waits for submitted work (used by benchmarks). */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.throwPendingErrors();
  }

  private throwPendingErrors(): void {
    if (this.pendingErrors.length === 0) return;
    const messages = this.pendingErrors.splice(0);
    throw new GpuError(`WebGPU error: ${messages.join("; ")}`);
  }

  destroy(): void {
    this.device.destroy();
  }
}

function collectTensors(value: unknown, into: Set<Tensor>): void {
  if (value instanceof Tensor) into.add(value);
  else if (Array.isArray(value)) value.forEach((v) => collectTensors(v, into));
  else if (
    value && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype
  ) {
    // Getters are lazy results (a tensor made only if read): not evaluated here; what they make
    // later belongs to the scope that is open then.
    for (const d of Object.values(Object.getOwnPropertyDescriptors(value))) {
      if (!d.get) collectTensors(d.value, into);
    }
  }
}
