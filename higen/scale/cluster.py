"""Pipelines as Ray actors across a cluster (``--ray-address auto|HOST:PORT``; docs/scaling.md).

- The driver (this process) keeps the learner, the bug store, coverage and ``training.log``.
- ``survey`` asks every live node, with a zero-CPU task pinned to it, which runtimes it has installed
  and whether it has a GPU. ``place`` gives each node one pipeline per CPU slot with the node's own
  plan: an optional target the node cannot run (a GPU target on a node without GPUs) is left out
  there, and a node lacking a required runtime gets no pipeline. GPU pipelines ask Ray for their share
  of the node's GPUs (Ray then sets ``CUDA_VISIBLE_DEVICES``); the others ask for none.
- Each pipeline is a :class:`PipelineActor` pinned to its node (hard node affinity) with
  ``max_restarts``: its constructor starts the workers, so a restarted actor comes back ready. A test
  whose actor dies is re-run by another pipeline (``PipelineEngine``); an actor whose node is gone
  cannot restart there and is retired. Only the in-flight tests of a lost pipeline are redone, and
  nothing is saved on the nodes, so nothing saved is lost.
- Tests travel as JSON text and file bytes (``higen.scale.wire``), never as pickled objects.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from higen.backends.registry import RUNTIMES
from higen.engine import EngineSettings, worker_versions
from higen.errors import UserError
from higen.files import write_json_atomic
from higen.generation.config import GenConfig
from higen.modes import Plan, gpu_present
from higen.scale.engine import PipelineEngine
from higen.scale.pipeline import Job, Pipeline, Produced
from higen.scale.wire import (
    pack,
    plan_from_json,
    plan_to_json,
    settings_from_json,
    settings_to_json,
    unpack,
)
from higen.tensors import scratch_dir
from higen.workers import WorkerStartError

ACTOR_RESTARTS = 8  # restarts of one pipeline actor after its process died
CONNECT_TIMEOUT_S = 5.0  # a HOST:PORT that does not accept a connection within this is unreachable
SURVEY_TIMEOUT_S = 120.0  # every live node answers the survey within this
START_TIMEOUT_S = 1800.0  # pipelines start (imports, op-support probe when not cached) within this
RECOVER_TIMEOUT_S = 600.0  # a lost pipeline's restarted actor is ready within this, or it is retired
WORKER_START_S = 180.0  # a worker that died is restarted within a test's time (higen.backends.pool)
INSTALL = 'pip install -e ".[ray]"'


def require_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray-address needs Ray, which is not installed: run `{INSTALL}` "
                          "(or pip install 'ray[default]')") from None
    return ray


def connect(address: str) -> None:
    """Connect this process to the cluster, or raise UserError in one line."""
    ray = require_ray()
    if address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S):
                pass
        except (OSError, ValueError) as error:
            why = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise UserError(f"--ray-address {address}: no Ray cluster reachable there ({why}); start one with "
                              "`ray start --head` and pass the address it prints (or `auto` on one of its nodes)"
                              ) from None
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as error:  # ConnectionError for `auto` without a cluster; others for a bad address
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"--ray-address {address}: cannot connect ({first})") from None


# -- nodes ----------------------------------------------------------------------------------------
def node_report() -> dict[str, Any]:
    """Runs on each node (a Ray task): which runtimes are installed there, whether it has a GPU."""
    return {"runtimes": sorted(key for key, info in RUNTIMES.items() if importlib.util.find_spec(info.package)),
            "gpu": gpu_present(), "host": socket.gethostname()}


@dataclass
class Node:
    node_id: str
    host: str
    cpus: float
    gpus: float  # Ray's GPU resource
    runtimes: set[str] = field(default_factory=set)
    gpu: bool = False  # device nodes present


@dataclass
class Slot:
    node: Node
    plan: Plan
    gpus: float = 0.0  # GPU share the actor asks for


def survey(ray) -> list[Node]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = [n for n in ray.nodes() if n.get("Alive")]
    task = ray.remote(num_cpus=0)(node_report)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
            for n in alive]
    try:
        reports = ray.get(refs, timeout=SURVEY_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise UserError(f"the Ray cluster's nodes did not answer within {SURVEY_TIMEOUT_S:.0f} s") from None
    return [Node(n["NodeID"], r["host"], float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)),
                 set(r["runtimes"]), bool(r["gpu"])) for n, r in zip(alive, reports)]


def is_gpu_target(name: str) -> bool:
    return name.split(":")[1].lower() in ("cuda", "gpu")


def node_plan(plan: Plan, node: Node) -> tuple[Plan | None, str]:
    """The plan on ``node``: optional targets it cannot run left out; None (and why) when it cannot
    run a required one."""
    for target in list(plan.targets):
        if target.runtime not in node.runtimes:
            why = f"{target.runtime} is not installed"
        elif is_gpu_target(target.name) and not (node.gpu and node.gpus > 0):
            why = "no GPU"
        else:
            continue
        if target.name not in plan.optional:
            return None, f"{target.name}: {why}"
        plan = plan.without(target.name)
    return plan, ""


def place(plan: Plan, nodes: list[Node], limit: int | None = None) -> tuple[list[Slot], list[str]]:
    """One slot per CPU of every node that can run the plan, interleaved across nodes (so that a
    ``limit`` spreads them); and why the other nodes get none."""
    groups, skipped = [], []
    for node in nodes:
        local, why = node_plan(plan, node)
        slots = int(node.cpus)
        if local is None or slots == 0:
            skipped.append(f"{node.host} ({node.node_id[:8]}): {why or 'no CPU'}")
            continue
        share = node.gpus / slots if any(is_gpu_target(t.name) for t in local.targets) else 0.0
        groups.append([Slot(node, local, share) for _ in range(slots)])
    ordered = [slot for row in zip_longest(*groups) for slot in row if slot is not None]
    return (ordered[:limit] if limit else ordered), skipped


# -- the remote side ----------------------------------------------------------------------------
class PipelineActor:
    """A pipeline on a cluster node (wrapped by ``ray.remote`` on the driver). Its constructor starts
    the workers and never raises (``info`` reports a failure), so Ray's restart brings it back ready."""

    def __init__(self, settings_json: str, name: str, run_tag: str):
        self.name, self.pipeline, self.error, self.served = name, None, None, 0
        # worker logs and support tables; a restarted actor clears what its dead predecessor left
        self.root = Path(tempfile.gettempdir()) / f"higen-{run_tag}-{name}"
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.work = scratch_dir(f"higen-{run_tag}-{name}-tests-")  # emptied after every test
        self.messages = io.StringIO()
        try:
            settings = settings_from_json(settings_json)  # per-target timeouts included
            self.pipeline = Pipeline(settings, self.root / "workers")
            self.pipeline.start(self.root, Console(file=self.messages, width=200))
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"

    def info(self) -> str:
        data: dict[str, Any] = {"name": self.name, "pid": os.getpid(), "host": socket.gethostname(),
                                "error": self.error, "messages": self.messages.getvalue(), "served": self.served}
        if self.error is None:
            pipeline = self.pipeline
            data.update(plan=plan_to_json(pipeline.settings.plan), generator=pipeline.generator.info,
                        versions={**worker_versions(pipeline.generator, pipeline.pool), "host": data["host"]})
            for name in ("support.json", "allowed_ops.json"):
                if (self.root / name).is_file():
                    data[name] = json.loads((self.root / name).read_text())
        return json.dumps(data)

    def run(self, config_json: str, index: int) -> dict[str, Any]:
        if self.error is not None:
            raise RuntimeError(f"pipeline {self.name} did not start: {self.error}")
        directory = self.work / f"t{index}"
        try:
            produced = self.pipeline.produce(GenConfig.from_json(json.loads(config_json)), directory)
            self.served += 1
            return pack(produced.generated, produced.executed)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


# -- the driver side ------------------------------------------------------------------------------
class RayPipeline:
    """Handle of a PipelineActor for RayEngine."""

    def __init__(self, name: str, actor, slot: Slot, ray, helpers: ThreadPoolExecutor, deadline_s: float):
        self.name, self.actor, self.slot, self.ray = name, actor, slot, ray
        self.helpers = helpers
        self.deadline_s = deadline_s
        self.info: dict[str, Any] = {}
        self.context: dict[str, Any] | None = None
        self.closed = False

    @property
    def plan(self) -> Plan:
        return plan_from_json(self.info["plan"])

    def run(self, job: Job) -> Future:
        return self.actor.run.remote(json.dumps(job.config.to_json()), job.index).future()

    def receive(self, raw: dict[str, Any], directory: Path) -> Produced:
        return Produced(*unpack(raw, directory))

    def lost(self, error: BaseException) -> bool:
        return isinstance(error, self.ray.exceptions.RayActorError)

    def recover(self) -> Future:
        """A future that says (True/False) whether the actor came back after Ray restarted it."""
        return self.helpers.submit(self._back)

    def _back(self) -> bool:
        exceptions = self.ray.exceptions
        deadline, died = time.monotonic() + RECOVER_TIMEOUT_S, 0
        while time.monotonic() < deadline and not self.closed:
            try:
                info = json.loads(self.ray.get(self.actor.info.remote(), timeout=RECOVER_TIMEOUT_S))
                self.info.update(pid=info["pid"])
                return info["error"] is None
            except exceptions.ActorDiedError:
                died += 1  # a call may race the restart; a dead actor keeps answering this
                if died >= 3:
                    return False
            except (exceptions.RayActorError, exceptions.GetTimeoutError):
                pass
            time.sleep(1.0)
        return False

    def abandon(self) -> None:
        """Kill the actor's process (Ray restarts it): its pending test then fails and is re-run."""
        self.ray.kill(self.actor, no_restart=False)

    def close(self) -> None:
        """Kill the actor for good (``RayEngine.close`` first lets it stop its workers)."""
        if not self.closed:
            self.closed = True
            try:
                self.ray.kill(self.actor, no_restart=True)
            except Exception:  # already gone
                pass


class RayEngine(PipelineEngine):
    """An engine whose pipelines are Ray actors on the nodes of the connected cluster (none runs in
    this process): the first pipeline's generator gives the operator universe and op support."""

    def __init__(self, settings: EngineSettings, run_dir: Path, console: Console | None = None,
                 limit: int | None = None):
        super().__init__(settings, run_dir, console)
        self.ray = require_ray()
        self.limit = limit
        self.nodes: list[Node] = []
        self.helpers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="higen-recover")

    def start(self, support_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Place and start the pipelines (all at once); the first one's op support becomes the run's."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.nodes = survey(self.ray)
        slots, skipped = place(self.settings.plan, self.nodes, self.limit)
        for line in skipped:
            self.console.print(f"[yellow]no pipeline on {line}[/yellow]")
        if not slots:
            targets = ", ".join(t.name for t in self.settings.plan.targets)
            raise UserError(f"no node of the Ray cluster can run {targets} ({'; '.join(skipped) or 'no nodes'})")
        actor_class = self.ray.remote(PipelineActor)
        longest = max([self.settings.timeout_s, *self.settings.timeouts_by_target.values()])
        deadline_s = self.settings.gen_timeout_s + 2 * WORKER_START_S + longest + 60  # then it is hung
        handles, run_tag = [], uuid.uuid4().hex[:8]
        for k, slot in enumerate(slots):
            actor = actor_class.options(
                num_cpus=1, num_gpus=slot.gpus, max_restarts=ACTOR_RESTARTS, max_task_retries=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(slot.node.node_id, soft=False),
            ).remote(settings_to_json(self.settings, slot.plan), f"p{k}", run_tag)
            handles.append(RayPipeline(f"p{k}", actor, slot, self.ray, self.helpers, deadline_s))
        self.use(handles)  # from here on, close() stops them
        try:
            infos = [json.loads(text) for text in
                     self.ray.get([h.actor.info.remote() for h in handles], timeout=START_TIMEOUT_S)]
        except Exception as error:
            self.close()
            raise WorkerStartError(f"Ray pipelines did not start: {str(error).strip().splitlines()[0]}") from None
        for handle, info in zip(handles, infos):
            if info["error"] is not None:
                self.close()
                raise WorkerStartError(f"pipeline {handle.name} on {info['host']}: {info['error']}")
            for line in info["messages"].splitlines():
                self.console.print(f"{handle.name} on {info['host']}: {line}")
            handle.info = info
            handle.context = self.case_context(info["versions"], handle.plan)
        first = handles[0].info
        self.settings.plan = handles[0].plan
        for name in ("support.json", "allowed_ops.json"):
            if name in first:
                write_json_atomic(self.run_dir / name, first[name])
        nodes: dict[str, list[RayPipeline]] = {}
        for handle in handles:
            nodes.setdefault(f"{handle.info['host']} {handle.slot.node.node_id[:8]}", []).append(handle)
        self.console.print(f"ray: {len(handles)} pipelines on {len(nodes)} node(s): " + "; ".join(
            f"{node} ({len(group)}: {', '.join(group[0].info['plan']['targets'])})" for node, group in nodes.items()))
        return self.versions()

    def ops(self) -> list[str]:
        return list(self.pipelines[0].info["generator"]["ops"])

    def versions(self) -> dict[str, Any]:
        first = self.pipelines[0].info.get("versions", {}) if self.pipelines else {}
        return {**first, "pipelines": [{"name": h.name, "host": h.info.get("host"), "node": h.slot.node.node_id,
                                        "pid": h.info.get("pid"), "targets": h.info.get("plan", {}).get("targets")}
                                       for h in self.pipelines]}

    def close(self) -> None:
        live = [h for h in self.pipelines if not h.closed]
        try:
            if live:  # let the actors stop their workers, all at once, then kill them
                self.ray.wait([h.actor.close.remote() for h in live], num_returns=len(live), timeout=30)
            super().close()
        finally:
            self.helpers.shutdown(wait=False, cancel_futures=True)
            if self.ray.is_initialized():
                self.ray.shutdown()
