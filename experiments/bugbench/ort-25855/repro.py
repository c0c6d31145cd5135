"""ORT #25855: LayerNormFusion fuses a LayerNorm pattern whose scale has shape [1] (it broadcasts in
the unfused graph) into LayerNormalization, whose kernel then rejects the scale size."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def build():
    rng = np.random.default_rng(25855)
    x = rng.normal(size=(2, 4)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
             numpy_helper.from_array(np.array([1.5], np.float32), "scale"),
             numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "bias")]
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]),
             helper.make_node("Sub", ["x", "mean"], ["centered"]),
             helper.make_node("Pow", ["centered", "two"], ["squared"]),
             helper.make_node("ReduceMean", ["squared"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["var_eps"]),
             helper.make_node("Sqrt", ["var_eps"], ["std"]),
             helper.make_node("Div", ["centered", "std"], ["normed"]),
             helper.make_node("Mul", ["scale", "normed"], ["scaled"]),
             helper.make_node("Add", ["scaled", "bias"], ["y"])]
    graph = helper.make_graph(nodes, "layernorm_broadcast_scale",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), {"x": x}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bugbench.entries import repro_main

    repro_main(build, sys.argv)
