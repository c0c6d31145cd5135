"""Shared fixtures. Everything here uses the real runtimes; only ``fault:*`` targets inject faults."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from higen.tensors import save_tensors

ORT_IR_VERSION = 8  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 by default


@pytest.fixture(scope="session", autouse=True)
def support_cache(tmp_path_factory) -> Path:
    """One op-support cache for the whole session, so each target is probed at most once."""
    path = Path(os.environ.get("HIGEN_TEST_CACHE_DIR") or tmp_path_factory.mktemp("higen-cache"))
    os.environ["HIGEN_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """A real NNSmith generator worker, shared by a test module."""
    from higen.generation.client import Generator

    gen = Generator(tmp_path_factory.mktemp("generator"))
    gen.start()
    yield gen
    gen.close()


def make_model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=ORT_IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def float_input(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


@pytest.fixture
def relu_add_case(tmp_path) -> tuple[Path, Path]:
    """A two-input float32 model (y = relu(a + b)) and its inputs, on disk."""
    model = make_model([helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
                       [float_input("a", [2, 3]), float_input("b", [2, 3])], [float_input("y", [2, 3])])
    onnx.save(model, tmp_path / "model.onnx")
    rng = np.random.default_rng(0)
    save_tensors(tmp_path / "inputs.npz", {"a": rng.standard_normal((2, 3)).astype(np.float32),
                                           "b": rng.standard_normal((2, 3)).astype(np.float32)})
    return tmp_path / "model.onnx", tmp_path / "inputs.npz"
