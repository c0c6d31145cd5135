"""OpenVINO #33365: a graph input that is also a graph output (through Identity) keeps int64 while the
CPU plugin narrows the rest of the graph to int32, so a Concat of it with a narrowed int64 value fails
compilation ("Argument element types are inconsistent"; same cause: #33241, Select)."""

import numpy as np
from onnx import TensorProto, helper


def build():
    rng = np.random.default_rng(33365)
    a = rng.integers(-8, 8, size=(3,), dtype=np.int64)
    b = rng.integers(-8, 8, size=(2,), dtype=np.int64)
    nodes = [helper.make_node("Concat", ["a", "b"], ["c"], axis=0),
             helper.make_node("Identity", ["b"], ["b_out"])]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, value.shape) for name, value in (("a", a), ("b", b))]
    outputs = [helper.make_tensor_value_info(name, TensorProto.INT64, None) for name in ("c", "b_out")]
    graph = helper.make_graph(nodes, "identity_output_concat", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"a": a, "b": b}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
