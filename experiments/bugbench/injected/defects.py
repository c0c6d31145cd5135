"""Injected defects: HiGen's second benchmark tier, bugs we plant ourselves so their ground truth is known.

Each defect is a predicate over the ONNX graph with conditions that must hold at once (three or four:
hard to hit by chance; two: the medium tier; each reachable from NNSmith's operators) and an effect: ``crash`` (the
session dies with SIGSEGV while it is being created, like a compiler crash) or ``wrong`` (every
graph output downstream of the trigger node gets 1 added to its first element). They live in
``sitecustomize.py`` next to this file, which patches ``onnxruntime.InferenceSession`` only in a
process whose ``PYTHONPATH`` holds this folder and whose ``HIGEN_BUGBENCH_DEFECT`` names a defect:
bugbench's own workers for an entry of tier "injected" (see ``bugbench/replay.py``). Nothing else
ever loads it. This module only reads graphs (numpy and onnx, no runtime).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx
import onnx.numpy_helper

COMPARATORS = {"Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal"}
INTEGERS = {onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.BOOL}
REDUCTIONS = {"ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean", "ReduceProd"}


class Graph:
    """What the predicates need: producers, ranks and element types of values (ONNX shape inference)."""

    def __init__(self, model: onnx.ModelProto):
        inferred = onnx.shape_inference.infer_shapes(model)
        self.nodes = list(inferred.graph.node)
        self.producer = {out: node for node in self.nodes for out in node.output}
        self.types = {v.name: v.type.tensor_type for v in
                      [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
        self.initializers = {t.name: t for t in inferred.graph.initializer}
        for node in self.nodes:  # Constant nodes hold values too (axes of opset-13+ reductions)
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.initializers[node.output[0]] = node.attribute[0].t
        self.outputs = [o.name for o in inferred.graph.output]

    def rank(self, name: str) -> int | None:
        if name in self.initializers:
            return len(self.initializers[name].dims)
        kind = self.types.get(name)
        return len(kind.shape.dim) if kind is not None and kind.HasField("shape") else None

    def elem_type(self, name: str) -> int | None:
        if name in self.initializers:
            return self.initializers[name].data_type
        kind = self.types.get(name)
        return kind.elem_type if kind is not None else None

    def constant(self, name: str):
        """The value of an initializer or Constant output, else None."""
        return onnx.numpy_helper.to_array(self.initializers[name]) if name in self.initializers else None

    def produced_by(self, name: str) -> str:
        node = self.producer.get(name)
        return node.op_type if node is not None else ""

    def downstream_outputs(self, node: onnx.NodeProto) -> list[str]:
        """Graph outputs that depend on ``node``."""
        reached = set(node.output)
        for other in self.nodes:  # nodes are topologically sorted in a valid model
            if reached & set(other.input):
                reached |= set(other.output)
        return [name for name in self.outputs if name in reached]


def where_cmp_broadcast(graph: Graph) -> onnx.NodeProto | None:
    """Where whose condition comes straight from a comparison of integers AND whose two branches
    differ in rank."""
    for node in graph.nodes:
        comparison = graph.producer.get(node.input[0]) if node.op_type == "Where" else None
        if comparison is not None and comparison.op_type in COMPARATORS \
                and graph.elem_type(comparison.input[0]) in INTEGERS:
            ranks = {graph.rank(node.input[1]), graph.rank(node.input[2])}
            if None not in ranks and len(ranks) == 2:
                return node
    return None


def concat_of_cast(graph: Graph) -> onnx.NodeProto | None:
    """Concat along the last axis of three or more inputs, one of them a Cast from an integer type,
    with a float32 result."""
    for node in graph.nodes:
        if node.op_type != "Concat" or len(node.input) < 3 or graph.elem_type(node.output[0]) != onnx.TensorProto.FLOAT:
            continue
        axis, rank = next(a.i for a in node.attribute if a.name == "axis"), graph.rank(node.output[0])
        casts = [graph.producer[name] for name in node.input if graph.produced_by(name) == "Cast"]
        if rank is not None and axis in (-1, rank - 1) and any(graph.elem_type(c.input[0]) in INTEGERS for c in casts):
            return node
    return None


def reduced_axes(graph: Graph, node: onnx.NodeProto) -> int | None:
    """How many axes a reduction reduces (attribute or constant input), None when not known."""
    attribute = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    if attribute is not None:
        return len(attribute)
    value = graph.constant(node.input[1]) if len(node.input) > 1 and node.input[1] else None
    return None if value is None else value.size


def reduce_after_transpose_f64(graph: Graph) -> onnx.NodeProto | None:
    """A float64 reduction over two or more axes with keepdims=0, fed by a Transpose."""
    for node in graph.nodes:
        keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        if (node.op_type in REDUCTIONS and keepdims == 0 and graph.produced_by(node.input[0]) == "Transpose"
                and graph.elem_type(node.input[0]) == onnx.TensorProto.DOUBLE
                and (reduced_axes(graph, node) or 0) >= 2):
            return node
    return None


def fed_by(graph: Graph, ops: set[str], producers: set[str]) -> onnx.NodeProto | None:
    """The first node of one of ``ops`` whose first input comes straight from one of ``producers``."""
    return next((node for node in graph.nodes if node.op_type in ops and graph.produced_by(node.input[0]) in producers),
                None)


def conv_clip_f32(graph: Graph) -> onnx.NodeProto | None:
    """A float32 Clip straight after a Conv (an activation fusion)."""
    node = fed_by(graph, {"Clip"}, {"Conv"})
    return node if node is not None and graph.elem_type(node.output[0]) == onnx.TensorProto.FLOAT else None


def softmax_of_matmul(graph: Graph) -> onnx.NodeProto | None:
    """A Softmax straight after a MatMul or Gemm (an attention-like pattern)."""
    return fed_by(graph, {"Softmax"}, {"MatMul", "Gemm"})


def pool_after_pad(graph: Graph) -> onnx.NodeProto | None:
    """A MaxPool or AveragePool straight after a Pad (a pad-into-pool fusion)."""
    return fed_by(graph, {"MaxPool", "AveragePool"}, {"Pad"})


def argextreme_after_transpose(graph: Graph) -> onnx.NodeProto | None:
    """An ArgMax or ArgMin straight after a Transpose (an axis remapped by the transpose optimizer)."""
    return fed_by(graph, {"ArgMax", "ArgMin"}, {"Transpose"})


@dataclass(frozen=True)
class Defect:
    name: str
    trigger: Callable[[Graph], onnx.NodeProto | None]
    effect: str  # "crash" | "wrong"


DEFECTS = {d.name: d for d in (
    Defect("where-cmp-broadcast", where_cmp_broadcast, "crash"),
    Defect("concat-of-cast", concat_of_cast, "wrong"),
    Defect("reduce-after-transpose-f64", reduce_after_transpose_f64, "wrong"),
    # two conditions: the medium tier, found in minutes rather than never
    Defect("conv-clip-f32", conv_clip_f32, "wrong"),
    Defect("softmax-of-matmul", softmax_of_matmul, "crash"),
    Defect("pool-after-pad", pool_after_pad, "wrong"),
    Defect("argextreme-after-transpose", argextreme_after_transpose, "crash"),
)}
