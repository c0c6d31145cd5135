"""Backend worker with optimization switches: ``python -m higen.numerics.switch_serve TARGET``.

Answers the requests of :mod:`higen.backends.serve` (``{"model", "inputs", "outputs"}``, same reply),
plus ``"options"``: constructor arguments of the backend for that request, e.g.
``{"disabled_optimizers": ["FuseReluClip"]}`` (one backend object is kept per distinct options), and
``{"op": "switches", "model": path}``: which switches this target offers for that model (see
:mod:`higen.numerics.passes`). Crash-isolated like every backend worker.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import tempfile
from typing import Any

from higen.backends.base import Target
from higen.backends.registry import require_installed
from higen.backends.serve import CompileCache, execute
from higen.numerics.passes import ORT_RULES, OV_SWITCHES, PIPELINE_WRAPPERS
from higen.workers import serve

ORT_TRANSFORMER_LINE = re.compile(r"GraphTransformer (\S+) modified: (\d+)")


def _stderr_of(action) -> str:
    """What native code writes to fd 2 while ``action()`` runs (exceptions are swallowed)."""
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            action()
        except Exception:
            pass
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        return capture.read().decode(errors="replace")


def switches(target: Target, module, model_path: str) -> dict[str, Any]:
    """The switches this target offers for the model, and how they group."""
    if target.runtime == "ort":
        if target.opt == "O0":
            return {"switches": [], "note": "ORT_DISABLE_ALL: every graph optimization is already off"}
        probe = module.create(target)
        probe.options.log_severity_level = 1  # info: one "GraphTransformer X modified: N" line per run
        log = _stderr_of(lambda: probe.compile(model_path))
        ran = list(dict.fromkeys(name for name, _ in ORT_TRANSFORMER_LINE.findall(log)))
        modified = sorted({name for name, count in ORT_TRANSFORMER_LINE.findall(log) if count != "0"})
        rules = [rule for group in ORT_RULES.values() for rule in group]
        return {"switches": list(dict.fromkeys([*ran, *ORT_RULES, *rules])), "groups": ORT_RULES,
                "modified": modified,
                "note": "graph transformers as ORT's log names them for this model, and the rewrite rules "
                        "of its rule-based transformers (from ORT's source: ORT does not log rule names)"}
    if target.runtime == "tvm":
        from tvm.ir.instrument import pass_instrument

        @pass_instrument
        class Names:
            def __init__(self):
                self.names: list[str] = []

            def run_before_pass(self, mod, info):
                self.names.append(info.name)

        names = Names()
        try:
            module.create(target, instruments=[names]).compile(model_path)
        except Exception:
            pass  # the passes that ran before a failure are still candidates
        ran = [n for n in dict.fromkeys(names.names) if n not in PIPELINE_WRAPPERS]
        return {"switches": ran, "note": "every pass that ran in tvm.compile for this model (PassContext "
                                         "disabled_pass); a pass the build cannot do without shows as not switchable"}
    if target.runtime == "ov":
        return {"switches": list(OV_SWITCHES), "note": "OpenVINO release builds offer no per-transformation "
                "switch; these coarse compile properties are the only optimization switches"}
    return {"switches": [], "note": f"no optimization switches known for {target.runtime}"}


def make_handler(target_text: str):
    target = Target.parse(target_text)
    module = importlib.import_module(require_installed(target.runtime).module)
    backends: dict[str, Any] = {"{}": module.create(target)}
    cache = CompileCache()  # per backend object: the key holds its id

    def backend_for(options: dict[str, Any]):
        key = json.dumps(options, sort_keys=True)
        if key not in backends:
            backends[key] = module.create(target, **options)
        return backends[key]

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("op") == "switches":
            return {"status": "ok", **switches(target, module, request["model"])}
        return execute(backend_for(request.get("options") or {}), request, cache)[0]

    return handle, backends["{}"].describe()


if __name__ == "__main__":
    serve(lambda: make_handler(sys.argv[1]))
