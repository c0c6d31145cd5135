"""Structure tokens of an ONNX graph: what a test exercised, for novelty rewards and coverage.

Tokens are strings: ``op:Conv``, ``edge:Conv>Relu``, ``dtype:Conv:float32``, ``rank:Conv:4``,
``attr:Conv.kernel_shape=3``. Attribute values are bucketed so that "new" means structurally new.
"""

from __future__ import annotations

import math

import onnx
from onnx import helper

from higen.graph import inferred_types, producers

SKIPPED_OPS = {"Constant"}


def _bucket(value) -> str:
    """Small integers exactly, larger magnitudes by power of two, floats by sign and magnitude."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_bucket(v) for v in value[:6]) + "]"
    if isinstance(value, int):
        return str(value) if -4 <= value <= 4 else ("-" if value < 0 else "") + f"2^{int(math.log2(abs(value)))}"
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return str(value)
        return ("-" if value < 0 else "+") + f"1e{int(math.floor(math.log10(abs(value))))}"
    return type(value).__name__


def graph_tokens(model: onnx.ModelProto) -> list[str]:
    """The sorted set of structure tokens of ``model``."""
    types = {name: value.type.tensor_type for name, value in inferred_types(model).items()}
    producer = producers(model)
    tokens: set[str] = set()
    for node in model.graph.node:
        if node.op_type in SKIPPED_OPS:
            continue
        op = node.op_type
        tokens.add(f"op:{op}")
        for name in node.input:
            if producer.get(name) and producer[name] not in SKIPPED_OPS:
                tokens.add(f"edge:{producer[name]}>{op}")
        first = types.get(node.input[0]) if node.input else None
        if first is not None and first.elem_type:
            tokens.add(f"dtype:{op}:{helper.tensor_dtype_to_np_dtype(first.elem_type)}")
            if first.HasField("shape"):
                tokens.add(f"rank:{op}:{len(first.shape.dim)}")
        for attribute in node.attribute:
            value = helper.get_attribute_value(attribute)
            if not isinstance(value, (onnx.TensorProto, onnx.GraphProto)):
                tokens.add(f"attr:{op}.{attribute.name}={_bucket(value)}")
    return sorted(tokens)
