"""What ``higen exec MODEL.onnx --backends ort,tvm,ov [--inputs inputs.npz] [--reference ref.npz]`` does
(the command is :mod:`higen.cli.exec_model`): load and check one model, make its inputs, run it on chosen
targets and judge the outcomes (also replays a bug case)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx.helper import tensor_dtype_to_np_dtype

from higen.backends.base import Outcome
from higen.backends.pool import BackendPool
from higen.errors import ModelError
from higen.execute import execute
from higen.generation.config import GenConfig
from higen.graph import producers
from higen.modes import Plan
from higen.oracle import Judgement
from higen.tensors import Tensors, save_tensors, scratch_dir
from higen.testcase import TestCase
from higen.workers import DEFAULT_MEMORY_LIMIT_MB


def load_model(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file; anything wrong becomes one clear line."""
    if not path.is_file():
        raise ModelError(f"{path} does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{path} is not a valid ONNX model ({first}); pass a .onnx file written by onnx.save") from error
    return model


def random_inputs(model: onnx.ModelProto, seed: int) -> Tensors:
    """Seeded random values for every graph input (initializers excluded); dims must be static."""
    rng = np.random.default_rng(seed)
    initializers = {init.name for init in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = [dim.dim_value for dim in tensor_type.shape.dim]
        if any(d <= 0 for d in shape):
            raise ModelError(f"input {value.name} has a dynamic shape; pass --inputs with concrete values")
        dtype = tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if dtype == np.bool_:
            inputs[value.name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            inputs[value.name] = rng.integers(0, 10, shape).astype(dtype)
        else:
            inputs[value.name] = rng.uniform(-2, 2, shape).astype(dtype)
    return inputs


def run_model(model: onnx.ModelProto, model_file: Path, plan: Plan, inputs: Tensors, reference: Path | None = None,
              timeout_s: float = 60.0, memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
              ) -> tuple[dict[str, Outcome], Judgement]:
    """Run ``model`` (the file ``model_file``) on ``inputs`` on the plan's targets in crash-isolated
    workers, and judge the outcomes with the plan's pairs (``reference``: an .npz of expected outputs)."""
    work = scratch_dir("higen-exec-")
    try:
        test = TestCase(GenConfig(), work, producers=producers(model))
        save_tensors(test.inputs_path, inputs)
        shutil.copy(model_file, test.model_path)
        with BackendPool(plan.targets, work / "logs", timeout_s, memory_limit_mb) as pool:
            execution = execute(pool, test, work, pairs=plan.pairs, reference=reference)
        return execution.outcomes, execution.judgement
    finally:
        shutil.rmtree(work, ignore_errors=True)
