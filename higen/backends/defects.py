"""Injected defects, for measuring root-cause identification only: never part of a real campaign.

``HIGEN_DEFECTS="ort:cpu:O3=Sigmoid@float32,Tanh;tvm:llvm:O3=Sin"`` makes each named target compute
the listed ops wrong (``Op@dtype``: only where the node's output has that dtype, as a defect in one
kernel would): before a model compiles, the first output of every such node is multiplied by
:data:`FACTOR` (floats) or has 1 added (integers), inside the real runtime. One wrong inner op then
shows through every output, dtype and pair it reaches, which is exactly what one root cause must
absorb. The rewritten model keeps the node's output name, so intermediates exposed for
localization carry the wrong value too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from higen.graph import copy_model, inferred_types

ENV = "HIGEN_DEFECTS"
FACTOR = 1.0625


def defects_for(target: str, spec: str | None = None) -> set[str]:
    """Op types injected into ``target`` by ``spec`` (default: the ``HIGEN_DEFECTS`` variable)."""
    ops: set[str] = set()
    for part in (os.environ.get(ENV, "") if spec is None else spec).split(";"):
        name, _, listed = part.partition("=")
        if name.strip() == target:
            ops.update(op.strip() for op in listed.split(",") if op.strip())
    return ops


def inject(model: onnx.ModelProto, ops: set[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose ``ops`` nodes give wrong results (module doc)."""
    elem = {name: value.type.tensor_type.elem_type for name, value in inferred_types(model).items()}
    result = copy_model(model)
    del result.graph.node[:]
    for index, node in enumerate(model.graph.node):
        if node.op_type not in {op.split("@")[0] for op in ops} or not node.output or node.output[0] not in elem:
            result.graph.node.append(node)
            continue
        original, dtype = node.output[0], elem[node.output[0]]
        if f"{node.op_type}@{np.dtype(helper.tensor_dtype_to_np_dtype(dtype)).name}" not in ops \
                and node.op_type not in ops:
            result.graph.node.append(node)
            continue
        hidden = f"{original}__defect{index}"
        changed = onnx.NodeProto()
        changed.CopyFrom(node)
        changed.output[0] = hidden
        floating = dtype in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
        value = helper.make_tensor(f"{hidden}_k", dtype, [], [FACTOR if floating else 1])
        result.graph.node.extend([
            changed,
            helper.make_node("Constant", [], [f"{hidden}_k"], value=value),
            helper.make_node("Mul" if floating else "Add", [hidden, f"{hidden}_k"], [original]),
        ])
    return result


class DefectiveBackend:
    """A real backend that compiles every model with ``ops`` made wrong (see :func:`inject`)."""

    def __init__(self, backend: Any, ops: set[str]):
        self.backend, self.ops = backend, ops

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "injected_defects": sorted(self.ops)}

    def compile(self, model_path: str) -> Any:
        rewritten = Path(model_path).with_suffix(".defective.onnx")
        onnx.save(inject(onnx.load(model_path), self.ops), rewritten)
        return self.backend.compile(str(rewritten))


def with_defects(backend: Any, target: str) -> Any:
    """``backend`` itself, or wrapped when ``HIGEN_DEFECTS`` names defects for ``target``."""
    ops = defects_for(target)
    return DefectiveBackend(backend, ops) if ops else backend
