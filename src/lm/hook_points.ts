/**
 * Finds TransformerLens/SAELens hook points (`blocks.L.hook_resid_pre|mid|post`) in an exported
 * decoder-only LM by the structure of its ONNX graph, not by node names:
 *
 * The residual stream is a chain of `Add` nodes `h_{i+1} = Add(h_i, f(h_i))` in which one operand
 * is the previous stream value and the other is computed from it (a sublayer: attention, MLP).
 * Dependence is data flow only: edges into Shape/Size are ignored, since a tensor's shape is not
 * its value (position ids built from `Shape(input_ids)` do not make the embedding a residual).
 * The longest such chain, starting at the embedding output, has `adds_per_block × n_layer`
 * links: 2 for GPT-2-style blocks (attention, then MLP), 1 for parallel attention+MLP blocks.
 * Then `hook_resid_pre` of block L is h_{k·L}, `hook_resid_mid` h_{k·L+1} (k = 2) and
 * `hook_resid_post` h_{k·(L+1)}.
 *
 * `patchForHook` adds the value as a graph output and prunes every node it does not depend on
 * (the rest of the model, the LM head), which is where the speed-up comes from.
 * @module
 */
import {
  ONNX_FLOAT,
  OnnxError,
  type OnnxGraph,
  type OnnxModel,
  parseOnnxModel,
  rewriteOnnxModel,
  tensorValueInfo,
} from "./onnx.ts";

/** Ops whose output depends only on the shape of their input, not its values. */
const SHAPE_ONLY = new Set(["Shape", "Size"]);

export interface ResidualStream {
  /** Stream values h_0 (the embedding) .. h_m, by graph value name. */
  readonly values: readonly string[];
  /** Names of the Add nodes producing h_1 .. h_m. */
  readonly addNodes: readonly string[];
  readonly nLayers: number;
  readonly addsPerBlock: number;
}

/** `blocks.L.hook_resid_{pre,mid,post}`: the residual stream hook points this module supports. */
const HOOK_RE = /^blocks\.(\d+)\.hook_resid_(pre|mid|post)$/;

/** The hook names a residual stream offers (for messages and listings). */
export function hookNames(stream: ResidualStream): string[] {
  const names: string[] = [];
  for (let l = 0; l < stream.nLayers; l++) {
    names.push(`blocks.${l}.hook_resid_pre`);
    if (stream.addsPerBlock === 2) names.push(`blocks.${l}.hook_resid_mid`);
    names.push(`blocks.${l}.hook_resid_post`);
  }
  return names;
}

/** Checks a hook name's form before the model is read; returns its layer. */
export function parseHookName(hookName: string): { layer: number; kind: "pre" | "mid" | "post" } {
  const m = HOOK_RE.exec(hookName);
  if (!m) {
    throw new OnnxError(
      `hook_name "${hookName}" is not supported: use blocks.L.hook_resid_pre, ` +
        "blocks.L.hook_resid_mid or blocks.L.hook_resid_post (residual stream hook points)",
    );
  }
  return { layer: Number(m[1]), kind: m[2] as "pre" | "mid" | "post" };
}

/** The graph value of a hook point. */
export function resolveHook(stream: ResidualStream, hookName: string, file: string): string {
  const { layer, kind } = parseHookName(hookName);
  const k = stream.addsPerBlock;
  if (layer >= stream.nLayers) {
    throw new OnnxError(
      `${file}: hook_name "${hookName}": the model has ${stream.nLayers} blocks (0..${
        stream.nLayers - 1
      })`,
    );
  }
  if (kind === "mid" && k !== 2) {
    throw new OnnxError(
      `${file}: hook_name "${hookName}": this model's blocks add to the residual stream once ` +
        "(parallel attention and MLP), so there is no hook_resid_mid",
    );
  }
  const index = kind === "pre" ? k * layer : kind === "mid" ? k * layer + 1 : k * (layer + 1);
  return stream.values[index];
}

/** Locates the residual stream of `graph` (see the module doc). */
export function findResidualStream(
  graph: OnnxGraph,
  nLayers: number,
  file: string,
): ResidualStream {
  const producer = new Map<string, number>();
  for (const node of graph.nodes) for (const v of node.outputs) producer.set(v, node.index);

  /** Whether value `a` is a data-flow ancestor of value `b` (or `b` itself). */
  function dependsOn(b: string, a: string): boolean {
    const aIndex = producer.get(a) ?? -1;
    const stack = [b], seen = new Set<string>([b]);
    while (stack.length > 0) {
      const v = stack.pop()!;
      if (v === a) return true;
      const p = producer.get(v);
      // Graph inputs and initializers end the search; so do nodes before a's producer.
      if (p === undefined || p <= aIndex) continue;
      const node = graph.nodes[p];
      if (SHAPE_ONLY.has(node.opType)) continue;
      for (const u of [...node.inputs, ...node.subgraphReads]) {
        if (u !== "" && !seen.has(u)) {
          seen.add(u);
          stack.push(u);
        }
      }
    }
    return false;
  }

  // Residual additions, keyed by their stream operand.
  const residualByInput = new Map<string, { node: string; output: string }>();
  const residualOutputs = new Set<string>();
  for (const node of graph.nodes) {
    if (node.opType !== "Add" || (node.domain !== "" && node.domain !== "ai.onnx")) continue;
    const [x, y] = node.inputs;
    if (!x || !y || x === y) continue;
    let stream: string | undefined;
    if (dependsOn(y, x)) stream = x;
    else if (dependsOn(x, y)) stream = y;
    if (stream === undefined || residualByInput.has(stream)) continue;
    residualByInput.set(stream, {
      node: node.name || `Add#${node.index}`,
      output: node.outputs[0],
    });
    residualOutputs.add(node.outputs[0]);
  }
  // Chains start where the stream operand is not itself a residual sum; keep the longest.
  let best: { values: string[]; adds: string[] } = { values: [], adds: [] };
  for (const start of residualByInput.keys()) {
    if (residualOutputs.has(start)) continue;
    const values = [start], adds: string[] = [];
    for (let next = residualByInput.get(start); next; next = residualByInput.get(next.output)) {
      adds.push(next.node);
      values.push(next.output);
    }
    if (adds.length > best.adds.length) best = { values, adds };
  }
  const m = best.adds.length;
  if (m === 0 || m % nLayers !== 0) {
    throw new OnnxError(
      `${file}: could not locate the residual stream: the longest chain of residual additions ` +
        `has ${m} links, expected a multiple of n_layer = ${nLayers} (config.json). ` +
        "Only decoder-only transformers with residual Add nodes are supported.",
    );
  }
  return { values: best.values, addNodes: best.adds, nLayers, addsPerBlock: m / nLayers };
}

/** Indices of the nodes `value` depends on (including through shape ops and subgraphs). */
export function ancestorNodes(graph: OnnxGraph, value: string): Set<number> {
  const producer = new Map<string, number>();
  for (const node of graph.nodes) for (const v of node.outputs) producer.set(v, node.index);
  const keep = new Set<number>();
  const stack = [value];
  const seen = new Set(stack);
  while (stack.length > 0) {
    const p = producer.get(stack.pop()!);
    if (p === undefined || keep.has(p)) continue;
    keep.add(p);
    const node = graph.nodes[p];
    for (const u of [...node.inputs, ...node.subgraphReads]) {
      if (u !== "" && !seen.has(u)) {
        seen.add(u);
        stack.push(u);
      }
    }
  }
  return keep;
}

export interface PatchedModel {
  /** The serialized patched ModelProto. */
  readonly bytes: Uint8Array;
  /** Name of the graph output holding the hook point (its graph value name). */
  readonly outputName: string;
  /** Graph value name of the hook point in the original model. */
  readonly valueName: string;
  readonly stream: ResidualStream;
  /** Nodes in the original and in the patched graph. */
  readonly nodeCount: { before: number; after: number };
}

export interface PatchOptions {
  /** Drop the nodes the hook point does not depend on (default true). */
  prune?: boolean;
  /** Width of the residual stream (for the output's declared shape). */
  dModel: number;
}

/**
 * Adds `hookName`'s value (under its graph name) as a graph output and, unless
 * `prune` is false, keeps only what computes it.
 */
export function patchForHook(
  modelOrBytes: OnnxModel | Uint8Array,
  nLayers: number,
  hookName: string,
  options: PatchOptions,
  file = "model.onnx",
): PatchedModel {
  const model = modelOrBytes instanceof Uint8Array
    ? parseOnnxModel(modelOrBytes, file)
    : modelOrBytes;
  const { graph } = model;
  for (const init of graph.initializers.values()) {
    if (init.external) {
      throw new OnnxError(
        `${model.file}: initializer "${init.name}" is stored as ONNX external data, which is not supported yet`,
      );
    }
  }
  const stream = findResidualStream(graph, nLayers, model.file);
  const valueName = resolveHook(stream, hookName, model.file);
  const prune = options.prune ?? true;
  const keepNodes = prune ? ancestorNodes(graph, valueName) : undefined;
  // The output keeps the value's name: renaming would need an Identity node, and a graph output
  // may be any value. Its declared type: the value_info's when the exporter wrote one.
  const declared = graph.valueInfo.get(valueName) ??
    tensorValueInfo(valueName, ONNX_FLOAT, ["batch_size", "sequence_length", options.dModel]);
  const bytes = rewriteOnnxModel(model, {
    outputs: [declared],
    keepExistingOutputs: !prune,
    keepNodes,
  });
  return {
    bytes,
    outputName: valueName,
    valueName,
    stream,
    nodeCount: { before: graph.nodes.length, after: keepNodes?.size ?? graph.nodes.length },
  };
}
