"""The engine interface (``higen.engine_api.FuzzEngine``): the plain, parallel and Ray engines offer
what the campaign loop, the trainer and the command line may ask, and hold only what they use: a Ray
engine has no generator or backend pool in this process, and every engine's pools take the
per-target timeouts from the engine settings. (Engines are built, not started: no worker runs.)"""

from __future__ import annotations

import pytest

from higen.backends.base import Target
from higen.engine import Engine, EngineSettings
from higen.engine_api import FuzzEngine
from higen.modes import Plan
from higen.scale.engine import ParallelEngine

TIMEOUTS = {"ort:cpu:O3": 7.0}


def settings() -> EngineSettings:
    plan = Plan("normal", [Target.parse("ort:cpu:O0"), Target.parse("ort:cpu:O3")], [("ort:cpu:O0", "ort:cpu:O3")])
    return EngineSettings(plan=plan, timeouts_by_target=dict(TIMEOUTS), learn_support=False)


def test_local_engines_offer_the_interface_and_their_pools_take_the_settings_timeouts(tmp_path):
    with Engine(settings(), tmp_path / "serial") as engine:
        assert isinstance(engine, FuzzEngine) and (engine.workers, engine.depth) == (1, 1)
        assert engine.pool.timeouts_by_target == TIMEOUTS
    with ParallelEngine(settings(), tmp_path / "parallel", workers=3) as engine:
        assert isinstance(engine, FuzzEngine) and (engine.workers, engine.depth) == (3, 6)
        assert [p.pool.timeouts_by_target for p in engine.local] == [TIMEOUTS] * 3
        assert not hasattr(engine, "generator") and not hasattr(engine, "pool")  # its pipelines hold them


def test_ray_engine_holds_no_workers_in_this_process(tmp_path):
    pytest.importorskip("ray", reason='Ray is an optional extra: pip install -e ".[ray]"')
    from higen.scale.cluster import RayEngine

    with RayEngine(settings(), tmp_path / "ray") as engine:
        assert isinstance(engine, FuzzEngine)
        assert not hasattr(engine, "generator") and not hasattr(engine, "pool")
