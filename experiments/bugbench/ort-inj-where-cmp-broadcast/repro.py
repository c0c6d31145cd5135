"""Injected defect where-cmp-broadcast: Where(Greater(int32 a, int32 b), x, y) with x of rank 2 and y of rank 1."""

import numpy as np
from onnx import TensorProto, helper


def build():
    rng = np.random.default_rng(1)
    feeds = {"a": rng.integers(-5, 6, (2, 3)).astype(np.int32), "b": rng.integers(-5, 6, (2, 3)).astype(np.int32),
             "x": rng.normal(size=(2, 3)).astype(np.float32), "y": rng.normal(size=(3,)).astype(np.float32)}
    nodes = [helper.make_node("Greater", ["a", "b"], ["c"]), helper.make_node("Where", ["c", "x", "y"], ["z"])]
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
              for name, value in feeds.items()]
    graph = helper.make_graph(nodes, "where_cmp_broadcast", inputs,
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), feeds


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
