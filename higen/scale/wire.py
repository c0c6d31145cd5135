"""What travels between the driver and a remote pipeline: JSON text and raw file bytes only.

Settings go out as JSON; a finished test comes back as ``{"meta": JSON text, "files": {name: bytes}}``.
The files (model.onnx, inputs.npz, reference.npz, one outputs npz per target) come only with tests
that have findings: the bug store needs them, nothing else does. The driver writes the bytes to its
own scratch folder under names it derives itself, and reads tensors from them with
``allow_pickle=False`` as everywhere else: no object built by a remote process, and nothing loaded
from a test's files, is ever unpickled here.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from higen.backends.base import Outcome, Target
from higen.coverage.manager import CoverageSettings
from higen.engine import EngineSettings
from higen.execute import Execution
from higen.generation.client import GenResult
from higen.generation.config import GenConfig
from higen.modes import Plan
from higen.oracle import Finding, Judgement, Tolerance, Verdict
from higen.testcase import TestCase

TEST_FILES = ("model.onnx", "inputs.npz", "reference.npz")
OUTCOME_FIELDS = {f.name for f in fields(Outcome)} - {"outputs_path"}
SAFE_TARGET = re.compile(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+){1,2}$")


# -- settings -------------------------------------------------------------------------------------
def plan_to_json(plan: Plan) -> dict[str, Any]:
    return {"mode": plan.mode, "targets": [t.name for t in plan.targets], "pairs": [list(p) for p in plan.pairs],
            "optional": sorted(plan.optional)}


def plan_from_json(data: dict[str, Any]) -> Plan:
    return Plan(data["mode"], [Target.parse(name) for name in data["targets"]],
                [tuple(pair) for pair in data["pairs"]], set(data["optional"]))


def settings_to_json(settings: EngineSettings, plan: Plan) -> str:
    """The settings a remote pipeline needs (with its node's own plan); coverage: collector families."""
    coverage = settings.coverage
    return json.dumps({
        "plan": plan_to_json(plan), "timeout_s": settings.timeout_s, "memory_limit_mb": settings.memory_limit_mb,
        "recycle_after": settings.recycle_after, "gen_timeout_s": settings.gen_timeout_s,
        "nan_policy": settings.nan_policy,
        "tolerances": {dtype: vars(t) for dtype, t in settings.tolerances.items()},
        "learn_support": settings.learn_support, "timeouts_by_target": settings.timeouts_by_target,
        "coverage_families": list(coverage.families) if coverage else None})


def settings_from_json(text: str) -> EngineSettings:
    data = json.loads(text)
    families = data["coverage_families"]
    return EngineSettings(
        plan=plan_from_json(data["plan"]), timeout_s=data["timeout_s"], memory_limit_mb=data["memory_limit_mb"],
        recycle_after=data["recycle_after"], gen_timeout_s=data["gen_timeout_s"], nan_policy=data["nan_policy"],
        tolerances={dtype: Tolerance(**t) for dtype, t in data["tolerances"].items()},
        learn_support=data["learn_support"],
        timeouts_by_target={str(k): float(v) for k, v in data["timeouts_by_target"].items()},
        coverage=CoverageSettings(families=tuple(families)) if families is not None else None)


# -- one test ---------------------------------------------------------------------------------------
def output_file(target: str) -> str:
    return f"{target.replace(':', '_')}.npz"


def pack(generated: GenResult, executed: Execution | None) -> dict[str, Any]:
    """A produced test as JSON text plus, for a test with findings, its files' bytes."""
    meta: dict[str, Any] = {"config": generated.config.to_json(), "reason": generated.reason,
                            "gen_s": generated.gen_s, "valid": executed is not None}
    files: dict[str, bytes] = {}
    if executed is not None:
        test = generated.test
        meta["test"] = {"n_nodes": test.n_nodes, "nnsmith_ops": test.nnsmith_ops, "tokens": test.tokens,
                        "reference_nonfinite": test.reference_nonfinite, "gen_s": test.gen_s,
                        "producers": test.producers}
        meta["outcomes"] = {name: {**o.to_json(), "log_tail": o.log_tail} for name, o in executed.outcomes.items()}
        meta["judgement"] = {"verdict": str(executed.judgement.verdict),
                             "findings": [f.to_json() for f in executed.judgement.findings]}
        meta["timings"] = executed.timings
        if executed.judgement.findings:
            for name in TEST_FILES:
                files[name] = (test.directory / name).read_bytes()
            for name, outcome in executed.outcomes.items():
                if outcome.outputs_path and Path(outcome.outputs_path).is_file():
                    files[f"outputs/{name}"] = Path(outcome.outputs_path).read_bytes()
    return {"meta": json.dumps(meta), "files": files}


def unpack(data: dict[str, Any], directory: Path) -> tuple[GenResult, Execution | None]:
    """The driver's copy of a packed test; files are written into ``directory``."""
    meta = json.loads(data["meta"])
    config = GenConfig.from_json(meta["config"])
    if not meta["valid"]:
        return GenResult(config, None, meta["reason"], meta["gen_s"]), None
    files: dict[str, bytes] = data.get("files") or {}
    directory.mkdir(parents=True, exist_ok=True)
    for name in TEST_FILES:
        if isinstance(files.get(name), bytes):
            (directory / name).write_bytes(files[name])
    outcomes = {}
    for name, values in meta["outcomes"].items():
        if not SAFE_TARGET.match(name):
            raise ValueError(f"a remote pipeline named a target {name!r}")
        outcome = Outcome(**{k: v for k, v in values.items() if k in OUTCOME_FIELDS})
        payload = files.get(f"outputs/{name}")
        if isinstance(payload, bytes):
            path = directory / output_file(name)
            path.write_bytes(payload)
            outcome.outputs_path = str(path)
        outcomes[name] = outcome
    findings = [Finding(**{**f, "verdict": Verdict(f["verdict"]), "targets": tuple(f["targets"])})
                for f in meta["judgement"]["findings"]]
    judgement = Judgement(Verdict(meta["judgement"]["verdict"]), findings)
    test = TestCase(config=config, directory=directory, **meta["test"])
    return GenResult(config, test, gen_s=meta["gen_s"]), Execution(outcomes, judgement, meta["timings"])
