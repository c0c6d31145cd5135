"""``higen exec MODEL.onnx --backends ort,tvm,ov [--inputs inputs.npz] [--reference ref.npz]``:
run one model on chosen targets, print each outcome and the verdict (also replays a bug case)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from higen.cli.parsing import OneLineParser
from higen.errors import UserError
from higen.exec_model import load_model, run_model
from higen.modes import exec_plan
from higen.numerics.inputs import exec_inputs
from higen.workers import DEFAULT_MEMORY_LIMIT_MB


def exec_parser() -> OneLineParser:
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


def command_exec(argv: list[str]) -> int:
    args = exec_parser().parse_args(argv)
    model = load_model(args.model)
    try:
        plan = exec_plan([b for b in args.backends.split(",") if b], with_reference=args.reference is not None)
    except ValueError as error:
        raise UserError(str(error)) from error
    inputs = exec_inputs(model, args.inputs, args.seed)
    outcomes, judgement = run_model(model, args.model, plan, inputs, args.reference, args.timeout, args.memory_limit_mb)
    console = Console()
    table = Table("target", "status", "stage", "compile s", "run s", "message")
    for name, outcome in outcomes.items():
        table.add_row(name, outcome.status, outcome.stage, f"{outcome.compile_s:.3f}", f"{outcome.run_s:.4f}",
                      (outcome.message or outcome.error_type)[:100])
    console.print(table)
    for finding in judgement.findings:
        console.print(f"[red]{finding.verdict}[/red] {', '.join(finding.targets)}: {finding.detail[:300]}")
    console.print(f"verdict: [bold]{judgement.verdict}[/bold]")
    return 0 if not judgement.findings else 1
