"""Entry point: ``python -m higen.main [run flags]`` and the ``higen`` console script
(``[project.scripts] higen = "higen.main:main"``). The command line itself is :mod:`higen.cli`."""

from __future__ import annotations

import sys

from higen.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
