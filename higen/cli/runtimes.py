"""``higen runtimes add|list|remove``: other releases of the runtimes in the per-user cache
(:mod:`higen.runtimes`)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from higen.cli.parsing import OneLineParser
from higen.errors import UserError
from higen.runtimes import describe_installed, install, installed, remove, runtimes_dir, unmet_requirements


def command_runtimes(argv: list[str]) -> int:
    parser = OneLineParser(prog="higen runtimes", description=f"Other releases of the runtimes, in {runtimes_dir()}.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="install releases, e.g. onnxruntime==1.20.1 (targets: ort@1.20.1)")
    add.add_argument("specs", nargs="+", metavar="DIST==VERSION")
    add.add_argument("--force", action="store_true", help="reinstall a release that is already there")
    listing = commands.add_parser("list", help="installed releases, their size and whether they import")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    drop = commands.add_parser("remove", help="delete releases from the cache")
    drop.add_argument("specs", nargs="+", metavar="DIST==VERSION")
    args = parser.parse_args(argv)
    console = Console()
    try:
        if args.command == "add":
            for spec in args.specs:
                with console.status(f"installing {spec} ..."):
                    path = install(spec, args.force)
                runtime = next(r for r in installed() if r.path == path)
                console.print(f"{runtime.spec} in {path}: name it in targets as {runtime.pinned}, "
                              f"e.g. --diff-backends {runtime.pinned},{runtime.key}")
                if unmet := unmet_requirements(path, runtime.distribution):
                    console.print(f"[yellow]note[/yellow]: it imports, but asks for what this environment does "
                                  f"not meet: {', '.join(unmet)}")
        elif args.command == "remove":
            for spec in args.specs:
                console.print(f"removed {remove(spec)}")
        else:
            return list_runtimes(console, args.json)
    except ValueError as error:
        raise UserError(str(error)) from error
    return 0


def list_runtimes(console, as_json: bool) -> int:
    rows = describe_installed()
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table("target", "folder", "size MB", "import check", title=f"runtime releases in {runtimes_dir()}")
    for row in rows:
        check = "[green]ok[/green]" if row["imports"] else f"[red]{row['problem'][:100]}[/red]"
        check += "".join(f"; wants {req}" for req in row["unmet_requirements"])
        table.add_row(row["target"], Path(row["path"]).name, f"{row['size_mb']:.0f}", check)
    console.print(table if rows else f"no runtime releases in {runtimes_dir()}: add one with "
                                     "`higen runtimes add onnxruntime==1.20.1`")
    return 0 if all(r["imports"] for r in rows) else 1
