"""Seeing inside an ONNX graph: expose intermediate tensors as graph outputs, list nodes in order.

Tensors that depend on a graph input through data are exposed, and so are the float results of
constant subgraphs (an op applied to a weight: the runtime computes or folds it, and can get it
wrong). Integer constant subgraphs (``Shape`` of a static tensor, the arithmetic that builds Pad
pads or Reshape shapes) stay internal, so TVM's integer folding still turns them into literals;
their values, when a node needs them, come from the model itself (:func:`constant_values`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

#: Ops whose output depends on the input's shape only, not on its values.
SHAPE_ONLY = {"Shape", "Size"}


@dataclass(frozen=True)
class Node:
    index: int  # position in graph.node (ONNX keeps it topological)
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def nodes(model: onnx.ModelProto) -> list[Node]:
    """Every node in topological order; unnamed nodes get ``OpType_index``."""
    result = []
    for index, node in enumerate(model.graph.node):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        result.append(Node(index, node.name or f"{node.op_type}_{index}", op,
                           tuple(node.input), tuple(name for name in node.output if name)))
    return result


def data_dependent(model: onnx.ModelProto) -> set[str]:
    """Tensors computed from a graph input's values (graph inputs included)."""
    initializers = {init.name for init in model.graph.initializer}
    live = {value.name for value in model.graph.input if value.name not in initializers}
    for node in model.graph.node:
        if node.op_type not in SHAPE_ONLY and any(name in live for name in node.input if name):
            live.update(name for name in node.output if name)
    return live


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values known from the model alone: initializers and Constant nodes' tensors."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def expose_intermediates(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose data-dependent node outputs, and the float results of its constant
    subgraphs (a runtime computes or folds those too, and may get them wrong), are graph outputs
    too, and their names. Integer constant subgraphs (shape arithmetic) and tensors whose type shape
    inference cannot tell are left internal."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {value.name: value for value in (*inferred.graph.value_info, *inferred.graph.output)}
    already = {value.name for value in model.graph.output}
    live = data_dependent(model)
    exposed = []
    result = onnx.ModelProto()
    result.CopyFrom(model)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    for node in model.graph.node:
        for name in node.output:
            elem = types[name].type.tensor_type.elem_type if name in types else 0
            if name and elem and (name in live or (elem in floats and node.op_type != "Constant")) \
                    and name not in already:
                result.graph.output.append(types[name])
                exposed.append(name)
                already.add(name)
    return result, exposed


def prefix_model(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """The part of ``model`` that computes ``output``, with that tensor as the only graph output."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {value.name: value for value in (*inferred.graph.value_info, *inferred.graph.output)}
    needed, kept = {output}, []
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    graph = model.graph
    result = onnx.helper.make_graph(
        list(reversed(kept)), graph.name, [v for v in graph.input if v.name in needed], [types[output]],
        [init for init in graph.initializer if init.name in needed])
    prefix = onnx.helper.make_model(result, opset_imports=model.opset_import, ir_version=model.ir_version)
    return prefix
