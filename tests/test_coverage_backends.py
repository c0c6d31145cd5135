"""Backend collectors in real workers (ONNX Runtime, OpenVINO, TVM), plus the structure collector:
structurally different models hit different features; the same model again adds nothing."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from higen.backends.base import Target
from higen.backends.pool import BackendPool
from higen.coverage.manager import CoverageManager, CoverageSettings
from higen.generation.tokens import graph_tokens
from higen.tensors import save_tensors
from tests.conftest import float_input, make_model

TARGETS = [t for t, package in (("ort:cpu:O3", "onnxruntime"), ("ov:CPU", "openvino"), ("tvm:llvm:O0", "tvm"))
           if importlib.util.find_spec(package)]
COLLECTORS = {"ort:cpu:O3": ["ort_transformers"], "ov:CPU": ["ov_layers", "ov_passes"], "tvm:llvm:O0": ["tvm_py"]}


def dense_model() -> onnx.ModelProto:
    """y = relu(x @ w + b): MatMul+Add fusions."""
    rng = np.random.default_rng(0)
    return make_model(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["s"]),
         helper.make_node("Relu", ["s"], ["y"])],
        [float_input("x", [2, 3])], [float_input("y", [2, 4])],
        [numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")])


def conv_model() -> onnx.ModelProto:
    """y = softmax(sigmoid(conv(x)) * 2): convolution, activation and reduction kernels."""
    rng = np.random.default_rng(1)
    return make_model(
        [helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Sigmoid", ["c"], ["g"]),
         helper.make_node("Mul", ["g", "two"], ["d"]), helper.make_node("Softmax", ["d"], ["y"], axis=-1)],
        [float_input("x", [1, 2, 5, 5])], [float_input("y", [1, 3, 5, 5])],
        [numpy_helper.from_array(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "k"),
         numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")])


def write_case(directory, name, model, shape):
    path = directory / f"{name}.onnx"
    onnx.save(model, path)
    save_tensors(directory / f"{name}.npz", {"x": np.random.default_rng(2).standard_normal(shape).astype(np.float32)})
    return path, directory / f"{name}.npz"


@pytest.mark.skipif(not TARGETS, reason="no runtime installed")
def test_collectors_tell_structurally_different_models_apart(tmp_path):
    settings = CoverageSettings(families=("ort", "ov", "ov-passes", "tvm-py"))
    manager = CoverageManager(settings, tmp_path, TARGETS)
    pool = BackendPool([Target.parse(t) for t in TARGETS], tmp_path / "workers")
    manager.configure(pool)
    cases = {"dense": (dense_model(), [2, 3]), "conv": (conv_model(), [1, 2, 5, 5])}
    files = {name: write_case(tmp_path, name, model, shape) for name, (model, shape) in cases.items()}
    news, features = [], []
    with pool:
        # Before coverage is enabled (the op-support probe): nothing is measured.
        outcomes = pool.run(*files["dense"], tmp_path)
        assert all(o.ok and "coverage" not in o.extra for o in outcomes.values()), outcomes
        manager.enable(pool)
        for step, name in enumerate(["dense", "conv", "dense", "conv"], start=1):
            outcomes = pool.run(*files[name], tmp_path)
            assert all(o.ok for o in outcomes.values()), {t: o.message for t, o in outcomes.items()}
            payloads = {t: o.extra["coverage"] for t, o in outcomes.items()}
            assert not any(p.get("errors") for p in payloads.values()), payloads
            features.append({c: set(f) for p in payloads.values() for c, f in p["features"].items()})
            news.append(manager.observe(step, graph_tokens(cases[name][0]), outcomes))
    first, second, again_dense, again_conv = news
    for target in TARGETS:
        for collector in COLLECTORS[target]:
            assert first[collector] > 0 and second[collector] > 0, (collector, news)
            assert again_dense[collector] == 0 and again_conv[collector] == 0, (collector, news)
    assert first["structure"] > 0 and second["structure"] > 0 and again_dense["structure"] == 0
    dense, conv = features[0], features[1]
    if "ort:cpu:O3" in TARGETS:
        assert "MatMulAddFusion" in dense["ort_transformers"]
    if "ov:CPU" in TARGETS:
        assert any(f.startswith("fused:FullyConnected") for f in dense["ov_layers"])
        assert any(f.startswith("kernel:Convolution") for f in conv["ov_layers"])
    if "tvm:llvm:O0" in TARGETS:
        assert any("relax/frontend/onnx" in f for f in conv["tvm_py"])
    # The worker logs keep nothing of the INFO chatter the collectors read.
    for log in (tmp_path / "workers").glob("*.log"):
        text = log.read_text()
        assert "GraphTransformer" not in text and "PassManager" not in text


def test_structure_only_by_default_and_workers_untouched(tmp_path):
    manager = CoverageManager(None, tmp_path, ["ort:cpu:O3"])
    assert manager.names == ["structure"] and not manager.backend_enabled and manager.worker_env() == {}
    new = manager.update({"structure": ["op:Add", "op:Relu"]})
    assert new == {"structure": 2}
    assert manager.update({"structure": ["op:Add", "edge:Add>Relu"]}) == {"structure": 1}
    assert manager.update({"structure": ["op:Add"]}, baseline={"structure": ["op:Mul"]}) == {"structure": 0}
    assert manager.covered() == {"structure": 4}
    assert manager.epoch_growth() == {"structure": 4} and manager.epoch_growth() == {"structure": 0}
    manager.close()
