"""``higen plot RUN_DIR [RUN_DIR ...] --out curves.png``: the runs' coverage and bugs on one figure
(:mod:`higen.coverage.plot`)."""

from __future__ import annotations

from pathlib import Path

from higen.cli.parsing import OneLineParser
from higen.coverage import plot as curves
from higen.errors import UserError


def command_plot(argv: list[str]) -> int:
    parser = OneLineParser(prog="higen plot", description=curves.__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--out", type=Path, default=Path("curves.png"), help="PNG to write (default curves.png)")
    parser.add_argument("--labels", help="comma-separated legend labels, one per run (default: the directories)")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        raise UserError(f"--labels has {len(labels)} labels for {len(args.runs)} runs")
    if args.out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, not {args.out}")
    if not args.out.parent.is_dir():
        raise UserError(f"cannot write {args.out}: directory {args.out.parent} does not exist")
    runs = []
    for index, given in enumerate(args.runs):
        if not given.is_dir():
            raise UserError(f"{given} is not a directory (give a run directory such as runs/3)")
        path = curves.resolve_run(given)
        if not (path / curves.CSV_NAME).exists() and not (path / curves.LOG_NAME).exists():
            raise UserError(f"{given} has neither {curves.CSV_NAME} nor {curves.LOG_NAME}: is it a HiGen run directory?")
        label = labels[index] if labels else (f"{path.parent.name}/{path.name}" if path.parent.name else path.name)
        runs.append(curves.load_run(path, label))
    curves.plot_runs(runs, args.out, args.title)
    print(f"wrote {args.out}")
    return 0
