"""Generator worker: ``python -m higen.generation.serve``. NNSmith's input search runs PyTorch
kernels on random graphs and has segfaulted, so generation lives in a process that may die."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from higen.workers import serve


def make_handler():
    import nnsmith
    import torch

    from higen.generation import nnsmith_build as build
    from higen.generation.config import GenConfig

    logging.getLogger("nnsmith").setLevel(logging.ERROR)
    for name in ("mgen", "smt", "dtest"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the first Adam costs ~2 s: pay it now
    allowed_by_path: dict[str, dict] = {}

    def allowed_ops(path: str | None) -> dict | None:
        if path and path not in allowed_by_path:
            allowed_by_path[path] = json.loads(Path(path).read_text())
        return allowed_by_path.get(path) if path else None

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] == "single_op_models":
            return {"status": "ok", "entries": build.single_op_models(Path(request["out_dir"]))}
        started = time.perf_counter()
        config = GenConfig.from_json(request["config"])
        try:
            info = build.build_test(config, allowed_ops(request.get("allowed")), Path(request["out_dir"]))
        except Exception as exc:  # any generation failure is an invalid test, never a finding
            return {"status": "invalid", "reason": f"{type(exc).__name__}: {str(exc)[:300]}",
                    "gen_s": time.perf_counter() - started}
        return {"status": "ok", "gen_s": time.perf_counter() - started, **info}

    info = {"ops": sorted(build.CATALOGUE),
            "vulnerable_ops": sorted(n for n, op in build.CATALOGUE.items() if op.limit_domain),
            "nnsmith_version": nnsmith.__version__, "torch_version": torch.__version__}
    return handle, info


if __name__ == "__main__":
    serve(make_handler)
