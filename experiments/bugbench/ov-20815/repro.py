"""OpenVINO #20815: CPU ReduceMean on integer tensors rounded the quotient to nearest (vdivps) instead of
towards zero like integer division (fix: PRs #25217, #25483)."""

import numpy as np
from onnx import TensorProto, helper


def build():
    rng = np.random.default_rng(20815)
    x = rng.integers(-5, 6, (3, 4, 2)).astype(np.int32)
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[0, 2], keepdims=0)
    graph = helper.make_graph([node], "reducemean_int", [helper.make_tensor_value_info("x", TensorProto.INT32, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"x": x}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
