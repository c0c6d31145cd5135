"""OpenVINO PR #32389: the CPU Convert node clamped when converting a signed integer to a narrower unsigned
type (int32 -1 -> uint8 0) instead of wrapping modulo 2^N as ONNX Cast (and OpenVINO's own spec) require."""

import numpy as np
from onnx import TensorProto, helper


def build():
    rng = np.random.default_rng(32389)
    x = rng.integers(-300, 300, (2, 6)).astype(np.int32)
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.UINT8)
    graph = helper.make_graph([node], "cast_int32_uint8", [helper.make_tensor_value_info("x", TensorProto.INT32, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"x": x}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
