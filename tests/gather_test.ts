/** Index-list gathers and scatter-adds (`kernels/gather.wgsl`) against plain-TypeScript loops. */
import {
  gatherCols,
  gatherRows,
  type IndexList,
  scatterAddCols,
  scatterAddRows,
} from "../src/kernels/gather.ts";
import { assertClose, gpuTest, randomArray, testGpu } from "./helpers.ts";
import type { Gpu } from "../src/gpu/device.ts";

/** The first `count` of `picked` are valid, in `slots` slots; the count sits at index 1. */
function indexList(gpu: Gpu, picked: number[], count: number, slots: number): IndexList {
  const list = Uint32Array.from({ length: slots }, (_, c) => picked[c % picked.length]);
  return {
    list: gpu.upload(list),
    total: gpu.upload(Uint32Array.of(99, count)),
    totalAt: 1,
    slots,
  };
}

Deno.test(
  "gathers fill past the count; scatter-adds touch only listed indices",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // The second shape spans several workgroups each way (256 columns by 32 rows each).
    const distinct = Array.from({ length: 300 }, (_, i) => (7 * i + 5) % 600);
    const shapes: [number, number, number[], number[][]][] = [
      [7, 23, [3, 0, 22, 9, 14], [[5, 5], [3, 6], [9, 4]]],
      [290, 600, distinct, [[300, 300], [270, 300], [40, 35]]],
    ];
    for (const [rows, width, picked, counts] of shapes) {
      await checkShape(gpu, rows, width, picked, counts);
    }
  },
);

async function checkShape(
  gpu: Gpu,
  rows: number,
  width: number,
  picked: number[],
  counts: number[][],
): Promise<void> {
  const a = randomArray(rows * width, 1);
  const b = randomArray(width * rows, 2); // [width, rows] as rows of length rows
  for (const [count, slots] of counts) {
    const valid = Math.min(count, slots);
    const idx = indexList(gpu, picked, count, slots);
    const at = (c: number) => picked[c % picked.length];
    const cols = await gatherCols(gpu.upload(a, [rows, width]), idx, 1).read();
    const wantCols = Array.from({ length: rows * slots }, (_, e) => {
      const [r, c] = [Math.floor(e / slots), e % slots];
      return c < valid ? a[r * width + at(c)] : 1;
    });
    assertClose(cols, wantCols, { rtol: 0, atol: 0, what: `gatherCols ${count}/${slots}` });
    const rowsOut = await gatherRows(gpu.upload(b, [width, rows]), idx).read();
    const wantRows = Array.from({ length: slots * rows }, (_, e) => {
      const [c, i] = [Math.floor(e / rows), e % rows];
      return c < valid ? b[at(c) * rows + i] : 0;
    });
    assertClose(rowsOut, wantRows, { rtol: 0, atol: 0, what: `gatherRows ${count}/${slots}` });

    const addCols = randomArray(rows * slots, 3);
    const dstCols = gpu.upload(a, [rows, width]);
    scatterAddCols(dstCols, gpu.upload(addCols, [rows, slots]), idx);
    const wantAddCols = Float32Array.from(a);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < valid; c++) wantAddCols[r * width + at(c)] += addCols[r * slots + c];
    }
    assertClose(await dstCols.read(), wantAddCols, {
      rtol: 1e-6,
      atol: 0,
      what: "scatterAddCols",
    });

    const addRows = randomArray(slots * rows, 4);
    const dstRows = gpu.upload(b, [width, rows]);
    scatterAddRows(dstRows, gpu.upload(addRows, [slots, rows]), idx);
    const wantAddRows = Float32Array.from(b);
    for (let c = 0; c < valid; c++) {
      for (let i = 0; i < rows; i++) wantAddRows[at(c) * rows + i] += addRows[c * rows + i];
    }
    assertClose(await dstRows.read(), wantAddRows, {
      rtol: 1e-6,
      atol: 0,
      what: "scatterAddRows",
    });
  }
}
