/**
 * Just enough of ONNX's ModelProto to add an internal value as a graph output and prune the
 * nodes it does not need. Field numbers are those of onnx/onnx.proto (IR version 3 onwards).
 * Everything not edited is written back byte for byte.
 * @module
 */
import {
  bytesField,
  concatBytes,
  type Field,
  fieldString,
  ProtobufError,
  readFields,
  repeatedInts,
  varintField,
} from "./protobuf.ts";

/** ModelProto: ir_version 1, graph 7, opset_import 8. */
const MODEL = { irVersion: 1, graph: 7, opsetImport: 8 } as const;
/** GraphProto fields. */
const GRAPH = {
  node: 1,
  initializer: 5,
  input: 11,
  output: 12,
  valueInfo: 13,
  sparseInitializer: 15,
} as const;
/** NodeProto fields. */
const NODE = { input: 1, output: 2, name: 3, opType: 4, attribute: 5, domain: 7 } as const;
/** AttributeProto: g 6 (a graph), graphs 11 (repeated graphs). */
const ATTRIBUTE = { g: 6, graphs: 11 } as const;
/** TensorProto: dims 1, data_type 2, name 8, data_location 14 (1 = EXTERNAL). */
const TENSOR = { dims: 1, dataType: 2, name: 8, dataLocation: 14 } as const;
/** ValueInfoProto: name 1, type 2. */
const VALUE_INFO = { name: 1, type: 2 } as const;

/** TensorProto.DataType codes used here. */
export const ONNX_FLOAT = 1;

export interface OnnxNode {
  /** Position in the graph's node list (ONNX requires topological order). */
  readonly index: number;
  readonly name: string;
  readonly opType: string;
  readonly domain: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  /** Values read by this node's subgraphs (If/Loop/Scan bodies) from the enclosing scope. */
  readonly subgraphReads: readonly string[];
}

export interface OnnxInitializer {
  readonly name: string;
  readonly dims: readonly number[];
  readonly dataType: number;
  /** Stored in a separate file (external data). */
  readonly external: boolean;
}

export interface OnnxGraph {
  readonly nodes: readonly OnnxNode[];
  readonly initializers: ReadonlyMap<string, OnnxInitializer>;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  /** value_info entries (shapes/types of intermediate values), raw ValueInfoProto bytes by name. */
  readonly valueInfo: ReadonlyMap<string, Uint8Array>;
  /** The graph's own fields, for writing it back. */
  readonly fields: readonly Field[];
}

export interface OnnxModel {
  readonly irVersion: number;
  readonly opsets: readonly { domain: string; version: number }[];
  readonly graph: OnnxGraph;
  readonly fields: readonly Field[];
  /** Where it was read from (for messages). */
  readonly file: string;
}

/** A model file that cannot be read as ONNX or edited as asked; the message names the file. */
export class OnnxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OnnxError";
  }
}

function nameOf(fields: Field[], number: number): string {
  const f = fields.find((x) => x.number === number && x.wire === 2);
  return f ? fieldString(f) : "";
}

function stringsOf(fields: Field[], number: number): string[] {
  return fields.filter((x) => x.number === number && x.wire === 2).map(fieldString);
}

/** Every value name a subgraph reads (its nodes' inputs, recursively), over-approximated. */
function subgraphReads(graphBytes: Uint8Array, what: string, out: string[]): void {
  for (const f of readFields(graphBytes, what)) {
    if (f.number !== GRAPH.node || f.wire !== 2) continue;
    const node = readFields(f.bytes!, what);
    out.push(...stringsOf(node, NODE.input).filter((s) => s !== ""));
    for (const a of node) {
      if (a.number !== NODE.attribute || a.wire !== 2) continue;
      for (const g of readFields(a.bytes!, what)) {
        if ((g.number === ATTRIBUTE.g || g.number === ATTRIBUTE.graphs) && g.wire === 2) {
          subgraphReads(g.bytes!, what, out);
        }
      }
    }
  }
}

function parseGraph(bytes: Uint8Array, file: string): OnnxGraph {
  const what = `${file}: GraphProto`;
  const fields = readFields(bytes, what);
  const nodes: OnnxNode[] = [];
  const initializers = new Map<string, OnnxInitializer>();
  const inputs: string[] = [], outputs: string[] = [];
  const valueInfo = new Map<string, Uint8Array>();
  for (const f of fields) {
    if (f.wire !== 2) continue;
    switch (f.number) {
      case GRAPH.node: {
        const nf = readFields(f.bytes!, `${file}: NodeProto #${nodes.length}`);
        const reads: string[] = [];
        for (const a of nf) {
          if (a.number !== NODE.attribute || a.wire !== 2) continue;
          for (const g of readFields(a.bytes!, `${file}: AttributeProto`)) {
            if ((g.number === ATTRIBUTE.g || g.number === ATTRIBUTE.graphs) && g.wire === 2) {
              subgraphReads(g.bytes!, `${file}: subgraph`, reads);
            }
          }
        }
        nodes.push({
          index: nodes.length,
          name: nameOf(nf, NODE.name),
          opType: nameOf(nf, NODE.opType),
          domain: nameOf(nf, NODE.domain),
          inputs: stringsOf(nf, NODE.input),
          outputs: stringsOf(nf, NODE.output),
          subgraphReads: reads,
        });
        break;
      }
      case GRAPH.initializer: {
        const tf = readFields(f.bytes!, `${file}: TensorProto`);
        const name = nameOf(tf, TENSOR.name);
        initializers.set(name, {
          name,
          dims: repeatedInts(tf, TENSOR.dims, `${file}: TensorProto ${name}`),
          dataType: tf.find((x) => x.number === TENSOR.dataType)?.varint ?? 0,
          external: tf.some((x) => x.number === TENSOR.dataLocation && x.varint === 1),
        });
        break;
      }
      case GRAPH.input:
        inputs.push(nameOf(readFields(f.bytes!, `${file}: input`), VALUE_INFO.name));
        break;
      case GRAPH.output:
        outputs.push(nameOf(readFields(f.bytes!, `${file}: output`), VALUE_INFO.name));
        break;
      case GRAPH.valueInfo:
        valueInfo.set(
          nameOf(readFields(f.bytes!, `${file}: value_info`), VALUE_INFO.name),
          f.bytes!,
        );
        break;
    }
  }
  return { nodes, initializers, inputs, outputs, valueInfo, fields };
}

/** Reads a serialized ModelProto (`file` is used in messages only). */
export function parseOnnxModel(bytes: Uint8Array, file: string): OnnxModel {
  try {
    const fields = readFields(bytes, `${file}: ModelProto`);
    const graphField = fields.find((f) => f.number === MODEL.graph && f.wire === 2);
    if (!graphField) {
      throw new OnnxError(`${file}: not an ONNX model (no graph field in the ModelProto)`);
    }
    const opsets = fields.filter((f) => f.number === MODEL.opsetImport && f.wire === 2).map((f) => {
      const of = readFields(f.bytes!, `${file}: OperatorSetIdProto`);
      return { domain: nameOf(of, 1), version: of.find((x) => x.number === 2)?.varint ?? 0 };
    });
    const graph = parseGraph(graphField.bytes!, file);
    if (graph.nodes.length === 0) throw new OnnxError(`${file}: the ONNX graph has no nodes`);
    return {
      irVersion: fields.find((f) => f.number === MODEL.irVersion)?.varint ?? 0,
      opsets,
      graph,
      fields,
      file,
    };
  } catch (e) {
    if (e instanceof ProtobufError) {
      throw new OnnxError(`${e.message}; the file is corrupt or not an ONNX model`);
    }
    throw e;
  }
}

/** A ValueInfoProto for a float tensor whose dims are given (number: fixed, string: symbolic). */
export function tensorValueInfo(
  name: string,
  elemType: number,
  dims: readonly (number | string)[],
): Uint8Array {
  const dimFields = dims.map((d) =>
    bytesField(1, typeof d === "number" ? varintField(1, d) : bytesField(2, d))
  );
  const tensorType = concatBytes([varintField(1, elemType), bytesField(2, dimFields)]);
  return concatBytes([
    bytesField(VALUE_INFO.name, name),
    bytesField(VALUE_INFO.type, [bytesField(1, tensorType)]),
  ]);
}

export interface RewriteOptions {
  /** Graph outputs after the rewrite, as ValueInfoProto bytes (see `tensorValueInfo`). */
  outputs: Uint8Array[];
  /** Keep the graph's existing outputs (before the new ones). */
  keepExistingOutputs: boolean;
  /** Indices of the nodes to keep; all when omitted. */
  keepNodes?: ReadonlySet<number>;
}

/**
 * Writes the model back with new outputs and, when `keepNodes` is given, only those nodes and
 * the initializers, inputs and value_info entries they still use.
 */
export function rewriteOnnxModel(model: OnnxModel, options: RewriteOptions): Uint8Array {
  const { graph } = model;
  const keep = options.keepNodes;
  const used = new Set<string>(), produced = new Set<string>();
  for (const node of graph.nodes) {
    if (keep && !keep.has(node.index)) continue;
    for (const v of node.inputs) used.add(v);
    for (const v of node.subgraphReads) used.add(v);
    for (const v of node.outputs) produced.add(v);
  }
  const graphParts: Uint8Array[] = [];
  let nodeIndex = 0;
  for (const f of graph.fields) {
    if (f.wire === 2) {
      if (f.number === GRAPH.node) {
        if (!keep || keep.has(nodeIndex)) graphParts.push(f.raw);
        nodeIndex++;
        continue;
      }
      if (keep && (f.number === GRAPH.initializer || f.number === GRAPH.sparseInitializer)) {
        const tf = readFields(f.bytes!, `${model.file}: initializer`);
        // SparseTensorProto names its values tensor (field 1) instead.
        const name = f.number === GRAPH.initializer ? nameOf(tf, TENSOR.name) : nameOf(
          readFields(tf.find((x) => x.number === 1)?.bytes ?? new Uint8Array(), "sparse"),
          TENSOR.name,
        );
        if (used.has(name)) graphParts.push(f.raw);
        continue;
      }
      if (keep && f.number === GRAPH.input) {
        if (used.has(nameOf(readFields(f.bytes!, "input"), VALUE_INFO.name))) {
          graphParts.push(f.raw);
        }
        continue;
      }
      if (f.number === GRAPH.output) {
        if (options.keepExistingOutputs) graphParts.push(f.raw);
        continue;
      }
      if (keep && f.number === GRAPH.valueInfo) {
        if (produced.has(nameOf(readFields(f.bytes!, "value_info"), VALUE_INFO.name))) {
          graphParts.push(f.raw);
        }
        continue;
      }
    }
    graphParts.push(f.raw);
  }
  for (const out of options.outputs) graphParts.push(bytesField(GRAPH.output, out));
  const graphBytes = concatBytes(graphParts);
  return concatBytes(
    model.fields.map((f) =>
      f.number === MODEL.graph && f.wire === 2 ? bytesField(MODEL.graph, graphBytes) : f.raw
    ),
  );
}
