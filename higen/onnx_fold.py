"""Fold integer-valued constant subgraphs of an ONNX model into initializers.

Generated models often compute Pad pads, Reshape shapes or Slice starts with small integer
subgraphs (``Constant -> Cast -> Concat -> Pad``, ``Shape(x) -> Gather -> ...``). ONNX Runtime
evaluates those at run time, but compilers with a static frontend (TVM Relax) reject any such
operand that is not a literal constant ("Dynamic pads are not supported yet"). Folding them
beforehand turns those operands into initializers, so the test reaches the compiler proper
instead of being discarded as unsupported. Only integer (int32/int64) results are folded:
floating-point computation is left in the graph, because that is what the compiler is tested on.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from higen.graph import copy_model

#: Result dtypes that are folded into initializers.
FOLDED_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
#: The only operators evaluated: the cheap, vectorized ones that shape computations use (no pooling,
#: convolution, padding or math on data: that is what the compiler is tested on, and the reference
#: evaluator's pure-Python kernels could run for minutes on a large constant).
SHAPE_OPS = frozenset("""
Constant Identity Cast CastLike Shape Size Gather Slice Concat Split Squeeze Unsqueeze Reshape Flatten
Transpose Expand Tile ConstantOfShape Range Add Sub Mul Div Mod Neg Abs Sign Min Max Floor Ceil Round
Equal Less LessOrEqual Greater GreaterOrEqual Not And Or Xor Where Clip ReduceProd ReduceSum ReduceMin
ReduceMax
""".split())
BROADCASTING = frozenset("Add Sub Mul Div Mod Min Max Equal Less LessOrEqual Greater GreaterOrEqual And Or Xor "
                         "Where Clip".split())
#: A folded result larger than this stays a computation (shape-like values are tiny).
MAX_FOLD_ELEMENTS = 1 << 16
#: Operands and results of an evaluated node are at most this large; larger constants are never read.
MAX_OPERAND_ELEMENTS = 1 << 16
#: Bounds checked before folding starts: a larger model is returned unchanged.
MAX_MODEL_NODES = 4096
MAX_MODEL_BYTES = 256 << 20
#: Nodes evaluated at most per model (each costs a reference-evaluator run of about a millisecond).
MAX_EVALUATED_NODES = 512


def fold_integer_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a new model in which constant integer-valued nodes of ``model`` are initializers.

    A node is constant when every input is an initializer that is not also a graph input, the
    output of a Constant node or of another constant node, or when it is ``Shape``/``Size`` of a
    tensor whose static shape is fully known. Nodes are visited in graph order, which ONNX
    requires to be topological, so whole chains fold. Constant nodes left without consumers are
    dropped, as are initializers that only they used. Graph inputs and outputs are not touched:
    a node producing a graph output is never folded.

    Bounded before it starts, so it may run in the driver: only ``SHAPE_OPS`` are evaluated, only on
    operands of at most ``MAX_OPERAND_ELEMENTS`` and when the result's size, known beforehand from the
    operands, is as small; at most ``MAX_EVALUATED_NODES`` nodes; a model with more than
    ``MAX_MODEL_NODES`` nodes or ``MAX_MODEL_BYTES`` bytes comes back unchanged.
    """
    graph = model.graph
    if len(graph.node) > MAX_MODEL_NODES or model.ByteSize() > MAX_MODEL_BYTES:
        return copy_model(model)
    graph_inputs = {value.name for value in graph.input}
    graph_outputs = {value.name for value in graph.output}
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    values: dict[str, np.ndarray] = {
        init.name: numpy_helper.to_array(init) for init in graph.initializer
        if init.name not in graph_inputs and math.prod(init.dims) <= MAX_OPERAND_ELEMENTS
    }
    shapes = _static_shapes(model)

    folded: dict[str, np.ndarray] = {}  # output name -> value, for nodes replaced by initializers
    constant_nodes: set[int] = set()  # indices of nodes whose outputs are all known
    budget = MAX_EVALUATED_NODES
    for index, node in enumerate(graph.node):
        if budget <= 0:
            break
        result = _evaluate(node, values, shapes, opsets, model.functions)
        if result is None:
            continue
        budget -= 1
        constant_nodes.add(index)
        values.update(result)
        if (node.op_type != "Constant" and not graph_outputs.intersection(result)
                and all(_foldable(value) for value in result.values())):
            folded.update(result)

    if not folded:
        return copy_model(model)
    return _rebuild(model, folded, constant_nodes)


def _evaluate(node: onnx.NodeProto, values: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
              opsets: dict[str, int], functions) -> dict[str, np.ndarray] | None:
    """Outputs of ``node`` by name when they are computable now and cheaply, else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in SHAPE_OPS:
        return None
    inputs = [name for name in node.input if name]
    if node.op_type in ("Shape", "Size") and inputs and inputs[0] in shapes:
        shape = np.array(shapes[inputs[0]], dtype=np.int64)
        if node.op_type == "Size":
            return {node.output[0]: np.array(np.prod(shape), dtype=np.int64)}
        attrs = {attr.name: attr.i for attr in node.attribute}  # opset 15 start/end: Python slice rules
        return {node.output[0]: shape[attrs.get("start", 0):attrs.get("end")]}
    if not all(name in values for name in inputs):
        return None
    operands = [values[name] for name in inputs]
    if node.op_type == "Constant" and _constant_size(node) > MAX_OPERAND_ELEMENTS:
        return None
    if _result_size(node.op_type, operands, node) > MAX_OPERAND_ELEMENTS:
        return None
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):  # nothing of this reaches the console
            warnings.simplefilter("ignore")
            evaluator = ReferenceEvaluator(node, opsets=opsets, functions=list(functions) or None)
            results = evaluator.run(None, dict(zip(inputs, operands)))
    except Exception:  # the reference lacks the op, or the node is invalid: leave it to the compiler
        return None
    if not all(isinstance(value, np.ndarray) for value in results):
        return None  # sequences, optionals, maps
    return {name: value for name, value in zip(node.output, results) if name}


def _constant_size(node: onnx.NodeProto) -> float:
    """Elements of a Constant node's value, from its attribute's dims (nothing is converted)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR:
            return math.prod(attr.t.dims)
        if attr.type == onnx.AttributeProto.SPARSE_TENSOR:
            return math.inf
        if attr.type in (onnx.AttributeProto.FLOATS, onnx.AttributeProto.INTS, onnx.AttributeProto.STRINGS):
            return len(attr.floats) + len(attr.ints) + len(attr.strings)
    return 1


def _result_size(op_type: str, operands: list[np.ndarray], node: onnx.NodeProto) -> float:
    """An upper bound of the elements ``op_type`` produces from ``operands``, known before running it
    (inf when it cannot be told): the operators that can grow a tensor are bounded from their operands."""
    if any(x.size > MAX_OPERAND_ELEMENTS for x in operands):
        return math.inf
    try:
        if op_type == "ConstantOfShape":
            return float(np.prod(operands[0].astype(np.float64))) if operands else 1
        if op_type == "Expand":
            return math.prod(np.broadcast_shapes(operands[0].shape, tuple(int(d) for d in operands[1])))
        if op_type == "Tile":
            return operands[0].size * float(np.prod(operands[1].astype(np.float64)))
        if op_type == "Range":
            start, limit, delta = (float(x) for x in operands)
            return math.ceil(abs((limit - start) / delta)) if delta else math.inf
        if op_type == "Gather":
            axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 0)
            data, indices = operands
            return data.size // max(1, data.shape[axis]) * indices.size if data.ndim else math.inf
        if op_type in BROADCASTING:
            return math.prod(np.broadcast_shapes(*(x.shape for x in operands)))
    except (ValueError, TypeError, IndexError, OverflowError):  # malformed operands: never evaluated
        return math.inf
    return sum(x.size for x in operands)  # the others move or reduce what they are given


def _foldable(value: np.ndarray) -> bool:
    return value.dtype in FOLDED_DTYPES and value.size <= MAX_FOLD_ELEMENTS


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Fully known shapes of graph inputs and (after shape inference) of intermediate values."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
        infos = list(inferred.input) + list(inferred.value_info)
    except Exception:  # inference is only an aid; graph-input shapes alone still fold Shape(input)
        infos = list(model.graph.input)
    shapes = {}
    for info in infos:
        if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
            continue
        dims = info.type.tensor_type.shape.dim
        if all(dim.HasField("dim_value") for dim in dims):
            shapes[info.name] = tuple(dim.dim_value for dim in dims)
    return shapes


def _rebuild(model: onnx.ModelProto, folded: dict[str, np.ndarray], constant_nodes: set[int]) -> onnx.ModelProto:
    """Copy of ``model`` with ``folded`` values as initializers and dead constant nodes removed."""
    graph = model.graph
    keep = [index for index, node in enumerate(graph.node)
            if not (index in constant_nodes and all(name in folded or not name for name in node.output))]
    # Drop constant nodes (and initializers) whose outputs nothing reads any more, last to first.
    outputs = {value.name for value in graph.output}
    used = set(outputs)
    alive = []
    for index in reversed(keep):
        node = graph.node[index]
        if index in constant_nodes and not used.intersection(node.output):
            continue
        alive.append(index)
        used.update(node.input)
        used.update(_subgraph_inputs(node))
    alive.reverse()

    new = copy_model(model)
    del new.graph.node[:]
    new.graph.node.extend(graph.node[index] for index in alive)
    graph_inputs = {value.name for value in graph.input}
    initializers = [init for init in graph.initializer if init.name in used or init.name in graph_inputs]
    initializers += [numpy_helper.from_array(value, name) for name, value in folded.items() if name in used]
    del new.graph.initializer[:]
    new.graph.initializer.extend(initializers)
    return new


def _subgraph_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope, conservatively."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            for inner in sub.node:
                names.update(inner.input)
                names.update(_subgraph_inputs(inner))
    return names
