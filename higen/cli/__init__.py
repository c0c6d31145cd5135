"""The command line, HiGen's top layer: ``python -m higen.main [run flags]`` or ``higen SUBCOMMAND``.

One module per subcommand, each with its parser and its ``command_*`` (``run``, the campaign, is the
default): they parse flags, call the library and print. The library raises :mod:`higen.errors` types
and never prints or exits; :func:`main` alone turns them into one line and exit status 2. Nothing
below this package imports it (tests/test_layers.py).
"""

from __future__ import annotations

import importlib
import sys

from higen.errors import HigenError

#: ``higen NAME ...`` -> the module and function that handle it (each parses its own flags).
SUBCOMMANDS = {
    "exec": ("higen.cli.exec_model", "command_exec"),
    "doctor": ("higen.cli.doctor", "command_doctor"),
    "triage": ("higen.cli.triage", "command_triage"),
    "repro": ("higen.cli.repro", "command_repro"),
    "reduce": ("higen.cli.reduce", "command_reduce"),
    "plot": ("higen.cli.plot", "command_plot"),
    "numerics": ("higen.cli.numerics", "command_numerics"),
    "localize": ("higen.cli.localize", "command_localize"),
    "report": ("higen.cli.report", "command_report"),
    "maximize": ("higen.cli.maximize", "command_maximize"),
    "runtimes": ("higen.cli.runtimes", "command_runtimes"),
    "regenerate": ("higen.cli.regenerate", "command_regenerate"),
}


def main(argv: list[str] | None = None) -> int:
    """Run ``higen`` with ``argv`` (default: this process's); every HiGen error ends in one line, status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        argv.pop(0)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            module, function = SUBCOMMANDS[argv.pop(0)]
            return getattr(importlib.import_module(module), function)(argv)
        from higen.cli.run import command_run

        return command_run(argv)
    except HigenError as error:
        print(f"higen: error: {error}", file=sys.stderr)
        return 2
