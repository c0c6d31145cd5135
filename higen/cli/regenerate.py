"""``higen regenerate RUN_DIR INDEX [--out DIR]``: rebuild test INDEX of a run exactly, from the config
and seed ``training.log`` recorded (:mod:`higen.regenerate`)."""

from __future__ import annotations

import json
from pathlib import Path

from higen.cli.parsing import OneLineParser
from higen.generation.client import GEN_TIMEOUT_S
from higen.regenerate import case_digest, logged_config, regenerate


def command_regenerate(argv: list[str]) -> int:
    parser = OneLineParser(prog="higen regenerate", description="Rebuild a logged test from its config and seed.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("index", type=int, help="the test's index in training.log")
    parser.add_argument("--out", type=Path, help="where to write it (default RUN_DIR/regenerated/INDEX)")
    parser.add_argument("--timeout", type=float, default=GEN_TIMEOUT_S, help="seconds before generation is given up")
    args = parser.parse_args(argv)
    config = logged_config(args.run_dir, args.index)
    out = args.out or args.run_dir / "regenerated" / str(args.index)
    allowed = args.run_dir / "allowed_ops.json"
    result = regenerate(config, out, allowed if allowed.is_file() else None, args.timeout)
    (out / "config.json").write_text(json.dumps(config.to_json(), indent=1) + "\n")
    if not result.valid:
        print(f"test {args.index} (seed {config.seed}) is invalid again: {result.reason}")
        return 1
    digest = case_digest(out)
    print(f"test {args.index} (seed {config.seed}) rebuilt in {out}: model sha256 {digest['model'][:16]}, "
          f"inputs sha256 {digest['inputs'][:16]}")
    return 0
