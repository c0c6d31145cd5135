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

#: ``higen NAME ...`` -> ``command_NAME`` of ``higen.cli.NAME`` (each parses its own flags).
SUBCOMMANDS = ("exec", "doctor", "triage", "repro", "reduce", "plot", "numerics", "localize", "report", "maximize",
               "runtimes", "regenerate")
MODULE_OF = {"exec": "exec_model"}  # not cli/exec.py: a module named like the builtin exec()


def main(argv: list[str] | None = None) -> int:
    """Run ``higen`` with ``argv`` (default: this process's); every HiGen error ends in one line, status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        argv.pop(0)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            name = argv.pop(0)
            module = importlib.import_module(f"higen.cli.{MODULE_OF.get(name, name)}")
            return getattr(module, f"command_{name}")(argv)
        from higen.cli.run import command_run

        return command_run(argv)
    except HigenError as error:
        print(f"higen: error: {error}", file=sys.stderr)
        return 2
