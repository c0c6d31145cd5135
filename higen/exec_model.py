"""``higen exec MODEL.onnx --backends ort,tvm,ov [--inputs inputs.npz] [--reference ref.npz]``:
run one model on chosen targets, print each outcome and the verdict (also replays a bug case)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx.helper import tensor_dtype_to_np_dtype
from rich.console import Console
from rich.table import Table

from higen.backends.base import REFERENCE
from higen.backends.pool import BackendPool
from higen.bugs.case import producers
from higen.modes import exec_plan
from higen.oracle import judge
from higen.tensors import Tensors, load_tensors, save_tensors, scratch_dir
from higen.workers import DEFAULT_MEMORY_LIMIT_MB


def exec_parser() -> argparse.ArgumentParser:
    from higen.main import OneLineParser

    p = OneLineParser(prog="higen exec", description="Run one ONNX model on several targets and compare.")
    p.add_argument("model", type=Path)
    p.add_argument("--backends", default="ort", help="comma-separated: ort,tvm,ov or targets like ort:cpu:O0; "
                                                     "ort@1.20.1 or ort@1.20.1:cpu:O0: a release from `higen runtimes add`")
    p.add_argument("--inputs", default="random", metavar="NPZ|random|edge",
                   help="an .npz of named inputs, or seeded random values, or edge values (+-0, denormals, "
                        "+-Inf, NaN, domain edges); default random")
    p.add_argument("--reference", type=Path, help=".npz of expected outputs (a bug case's outputs/torch_cpu.npz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--memory-limit-mb", type=int, default=DEFAULT_MEMORY_LIMIT_MB)
    return p


def load_model(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file; anything wrong becomes one clear line."""
    from higen.main import UserError

    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} is not a valid ONNX model ({first}); pass a .onnx file written by onnx.save") from error
    return model


def random_inputs(model: onnx.ModelProto, seed: int) -> Tensors:
    """Seeded random values for every graph input (initializers excluded); dims must be static."""
    from higen.main import UserError

    rng = np.random.default_rng(seed)
    initializers = {init.name for init in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = [dim.dim_value for dim in tensor_type.shape.dim]
        if any(d <= 0 for d in shape):
            raise UserError(f"input {value.name} has a dynamic shape; pass --inputs with concrete values")
        dtype = tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if dtype == np.bool_:
            inputs[value.name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            inputs[value.name] = rng.integers(0, 10, shape).astype(dtype)
        else:
            inputs[value.name] = rng.uniform(-2, 2, shape).astype(dtype)
    return inputs


def command_exec(argv: list[str]) -> int:
    from higen.main import UserError
    from higen.numerics.inputs import exec_inputs

    args = exec_parser().parse_args(argv)
    model = load_model(args.model)
    try:
        plan = exec_plan([b for b in args.backends.split(",") if b], with_reference=args.reference is not None)
    except ValueError as error:
        raise UserError(str(error)) from error
    work = scratch_dir("higen-exec-")
    console = Console()
    try:
        inputs_path = work / "inputs.npz"
        save_tensors(inputs_path, exec_inputs(model, args.inputs, args.seed))
        model_path = work / "model.onnx"
        shutil.copy(args.model, model_path)
        with BackendPool(plan.targets, work / "logs", args.timeout, args.memory_limit_mb) as pool:
            outcomes = pool.run(model_path, inputs_path, work)
            precision = pool.internal_precision()
        outputs = {name: load_tensors(o.outputs_path) for name, o in outcomes.items() if o.ok}
        if args.reference:
            outputs[REFERENCE] = load_tensors(args.reference)
        judgement = judge(outcomes, outputs, plan.pairs, producers(model), precision=precision)
        table = Table("target", "status", "stage", "compile s", "run s", "message")
        for name, outcome in outcomes.items():
            table.add_row(name, outcome.status, outcome.stage, f"{outcome.compile_s:.3f}", f"{outcome.run_s:.4f}",
                          (outcome.message or outcome.error_type)[:100])
        console.print(table)
        for finding in judgement.findings:
            console.print(f"[red]{finding.verdict}[/red] {', '.join(finding.targets)}: {finding.detail[:300]}")
        console.print(f"verdict: [bold]{judgement.verdict}[/bold]")
        return 0 if not judgement.findings else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
