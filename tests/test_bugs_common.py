"""Models and helpers shared by the ``test_bugs_*`` files (no tests here).

Two 20-node models with a real failure buried in the middle:

- ``relu_clip_chain``: float64, Relu -> Clip with constant bounds. ONNX Runtime 1.31 at O3 fails to
  compile it ("Unexpected data type for Clip 'min' input of 11", FuseReluClip), a real ORT bug
  HiGen found; at O0 it runs.
- ``saturating_add_chain``: uint8 Add that overflows. OpenVINO CPU saturates (255) where ONNX wraps
  (a known semantic difference), so OpenVINO disagrees with the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from conftest import make_model
from higen.bugs.capture import capture
from higen.bugs.store import BugStore

UNARY = ("Sigmoid", "Tanh", "Sin", "Cos", "Neg", "Abs")
RELU_CLIP_TARGETS = ["ort:cpu:O0", "ort:cpu:O3"]
RELU_CLIP_PAIRS = [("ort:cpu:O0", "ort:cpu:O3"), ("torch:cpu", "ort:cpu:O0")]  # normal mode's order


def _unary_chain(start: str, count: int, prefix: str) -> tuple[list, str]:
    nodes, previous = [], start
    for index in range(count):
        nodes.append(helper.make_node(UNARY[index % len(UNARY)], [previous], [f"{prefix}{index}"]))
        previous = f"{prefix}{index}"
    return nodes, previous


def relu_clip_chain(before: int = 9, after: int = 9):
    """``before`` unary ops, Relu, Clip(0.1, 0.5), ``after`` unary ops: float64, 20 nodes by default."""
    head, last = _unary_chain("x", before, "b")
    tail, out = _unary_chain("c", after, "a")
    nodes = [*head, helper.make_node("Relu", [last], ["r"]), helper.make_node("Clip", ["r", "lo", "hi"], ["c"]), *tail]
    bounds = [numpy_helper.from_array(np.array(0.1), "lo"), numpy_helper.from_array(np.array(0.5), "hi")]
    shape = [3, 4]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.DOUBLE, shape)],
                       [helper.make_tensor_value_info(out, TensorProto.DOUBLE, shape)], bounds)
    return model, {"x": np.random.default_rng(0).standard_normal(shape)}


def saturating_add_chain(before: int = 16):
    """float32 unary chain, Mul by 250, Cast to uint8, Add a 0-d uint8 input, Max: 20 nodes by default."""
    head, last = _unary_chain("x", before, "f")
    nodes = [*head, helper.make_node("Mul", [last, "scale"], ["m"]),
             helper.make_node("Cast", ["m"], ["u"], to=TensorProto.UINT8),
             helper.make_node("Add", ["u", "b"], ["s"]), helper.make_node("Max", ["s", "floor"], ["y"])]
    shape = [4, 5]
    weights = [numpy_helper.from_array(np.array(250.0, np.float32), "scale"),
               numpy_helper.from_array(np.array(3, np.uint8), "floor")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                               helper.make_tensor_value_info("b", TensorProto.UINT8, [])],  # 0-d on purpose
                       [helper.make_tensor_value_info("y", TensorProto.UINT8, shape)], weights)
    rng = np.random.default_rng(1)
    return model, {"x": rng.uniform(0.2, 1.2, shape).astype(np.float32), "b": np.array(200, np.uint8)}


def save_case(run_dir: Path, model, inputs, targets, pairs=None, **options) -> Path:
    """Run ``model`` for real on ``targets``, record the finding, return the saved case folder."""
    store = BugStore(Path(run_dir) / "bug_cases", options.pop("examples_per_signature", 1))
    judgement, case = capture(model, inputs, targets, store, pairs=pairs, **options)
    assert case is not None, judgement
    return store.root / case
