"""The one graph toolkit: who produces a tensor, what a tensor depends on, which tensors are constant
or depend on the inputs' values, and models cut out of a model (intermediates exposed as outputs,
the prefix that computes one tensor, a chosen part of the nodes).

ONNX keeps ``graph.node`` in topological order and gives every tensor one producer, so the backward
cone of a tensor is walked through the output -> producer map and sorted by node index.

Tensors that depend on a graph input through data are exposed, and so are the float results of
constant subgraphs (an op applied to a weight: the runtime computes or folds it, and can get it
wrong). Integer constant subgraphs (``Shape`` of a static tensor, the arithmetic that builds Pad
pads or Reshape shapes) stay internal, so TVM's integer folding still turns them into literals;
their values, when a node needs them, come from the model itself (:func:`constant_values`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

#: Ops whose output depends on the input's shape only, not on its values.
SHAPE_ONLY = {"Shape", "Size"}
FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class Node:
    index: int  # position in graph.node (ONNX keeps it topological)
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def node_name(node: onnx.NodeProto, index: int) -> str:
    """A node's name, ``OpType_index`` for an unnamed one (how reports and root causes name nodes)."""
    return node.name or f"{node.op_type}_{index}"


def nodes(model: onnx.ModelProto) -> list[Node]:
    """Every node in topological order."""
    result = []
    for index, node in enumerate(model.graph.node):
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        result.append(Node(index, node_name(node, index), op, tuple(node.input),
                           tuple(name for name in node.output if name)))
    return result


# -- producers and cones ---------------------------------------------------------------------------
def producer_indices(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> index of the node producing it (graph inputs and weights have none)."""
    return {out: index for index, node in enumerate(model.graph.node) for out in node.output if out}


def producer_nodes(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Tensor name -> the node producing it."""
    return {out: model.graph.node[index] for out, index in producer_indices(model).items()}


def producers(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor name -> op type of the node producing it (what the oracle names in a mismatch signature)."""
    return {out: node.op_type for out, node in producer_nodes(model).items()}


def cone(model: onnx.ModelProto, outputs: Iterable[str]) -> list[int]:
    """Indices, in topological order, of the nodes that ``outputs`` depend on (their producers included)."""
    made_by = producer_indices(model)
    todo, found = list(outputs), set()
    while todo:
        index = made_by.get(todo.pop())
        if index is not None and index not in found:
            found.add(index)
            todo.extend(name for name in model.graph.node[index].input if name)
    return sorted(found)


def ancestors(model: onnx.ModelProto, output: str | None) -> set[str]:
    """Names of the nodes that ``output`` depends on (every node when ``output`` is None or no node
    produces it)."""
    graph_nodes = model.graph.node
    indices = cone(model, [output]) if output else []
    return {node_name(graph_nodes[i], i) for i in indices or range(len(graph_nodes))}


def ancestor_ops(model: onnx.ModelProto, output: str) -> set[str]:
    """Op types of every node ``output`` depends on (its producer included)."""
    return {model.graph.node[index].op_type for index in cone(model, [output])}


def upstream_tensors(model: onnx.ModelProto, output: str) -> set[str]:
    """``output`` and every tensor it is computed from (graph inputs and weights included)."""
    graph_nodes = model.graph.node
    return {output, *(name for index in cone(model, [output]) for name in graph_nodes[index].input if name)}


# -- what depends on what ----------------------------------------------------------------------------
def data_dependent(model: onnx.ModelProto) -> set[str]:
    """Tensors computed from a graph input's values (graph inputs included)."""
    initializers = {init.name for init in model.graph.initializer}
    live = {value.name for value in model.graph.input if value.name not in initializers}
    for node in model.graph.node:
        if node.op_type not in SHAPE_ONLY and any(name in live for name in node.input if name):
            live.update(name for name in node.output if name)
    return live


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Values written in the model itself: initializers and Constant nodes' tensors."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def constant_names(model: onnx.ModelProto) -> set[str]:
    """Tensors that depend on no graph input (compile-time constants): initializers that are not
    graph inputs, Constant nodes' outputs and whatever only those feed."""
    inputs = {value.name for value in model.graph.input}
    constant = {init.name for init in model.graph.initializer if init.name not in inputs}
    for node in model.graph.node:
        feeds = [name for name in node.input if name]
        if node.op_type == "Constant" or (feeds and all(name in constant for name in feeds)):
            constant.update(name for name in node.output if name)
    return constant


# -- models cut out of a model -------------------------------------------------------------------------
def inferred_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Tensor name -> type, from ONNX shape inference (graph inputs, intermediates, graph outputs)."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    return {value.name: value for value in (*graph.input, *graph.value_info, *graph.output)}


def array_info(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    """The type of a graph input or output that holds ``value``."""
    return onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype),
                                              list(value.shape))


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def expose_intermediates(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose data-dependent node outputs, and the float results of its constant
    subgraphs (a runtime computes or folds those too, and may get them wrong), are graph outputs
    too, and their names. Integer constant subgraphs (shape arithmetic) and tensors whose type shape
    inference cannot tell are left internal."""
    types = inferred_types(model)
    already = {value.name for value in model.graph.output}
    live = data_dependent(model)
    exposed = []
    result = copy_model(model)
    for node in model.graph.node:
        for name in node.output:
            elem = types[name].type.tensor_type.elem_type if name in types else 0
            if name and elem and (name in live or (elem in FLOATS and node.op_type != "Constant")) \
                    and name not in already:
                result.graph.output.append(types[name])
                exposed.append(name)
                already.add(name)
    return result, exposed


def submodel(model: onnx.ModelProto, nodes: Iterable[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
             outputs: list[onnx.ValueInfoProto], initializers: list[onnx.TensorProto], name: str = "",
             producer_name: str = "") -> onnx.ModelProto:
    """A model of ``nodes`` (part of ``model``'s, in its order) with these graph inputs, outputs and
    initializers, under ``model``'s opsets and IR version; the graph is named ``name`` or as ``model``'s."""
    graph = onnx.helper.make_graph(list(nodes), name or model.graph.name, inputs, outputs, initializers)
    result = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    if producer_name:
        result.producer_name = producer_name
    return result


def prefix_model(model: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """The part of ``model`` that computes ``output``, with that tensor as the only graph output
    (KeyError when shape inference cannot tell its type)."""
    types = inferred_types(model)
    needed = upstream_tensors(model, output)
    graph = model.graph
    return submodel(model, [graph.node[index] for index in cone(model, [output])],
                    [value for value in graph.input if value.name in needed], [types[output]],
                    [init for init in graph.initializer if init.name in needed])
