"""Persistent, isolated worker processes.

Every runtime that may crash (a compiler under test, NNSmith's PyTorch input search) lives in its own
child process that pays its imports once and then serves requests. The parent talks JSON lines over a
private pipe; tensors travel through files (see ``higen.tensors``), so no pipe ever fills up. When a
child dies, hangs or grows past its memory cap, the parent records why and starts a fresh one on the
next request. The child side is :func:`serve`.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from higen.errors import HigenError

#: Environment every worker gets: one thread per runtime, so workers do not fight over the cores.
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TVM_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}

POLL_INTERVAL_S = 0.02
#: Per-worker resident-memory cap: a generated model whose compilation (or NNSmith's own solving)
#: grows past it is killed and reported, well before it can exhaust the machine.
DEFAULT_MEMORY_LIMIT_MB = 4096
# Backend workers restart after this many answers: runtimes grow slowly over thousands of sessions
# (ORT ~30% over 5,000 tests, docs/results.md); a fresh child costs one import, overlapped with generation.
DEFAULT_RECYCLE_AFTER = 1000


class WorkerFailure(Exception):
    """The worker did not answer: it died, hung or outgrew its memory cap. It will be restarted."""

    def __init__(self, kind: str, detail: str, log_tail: str = "", signal_name: str | None = None,
                 stage: str = ""):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind  # "crash" | "timeout" | "oom"
        self.detail = detail
        self.log_tail = log_tail
        self.signal_name = signal_name
        self.stage = stage  # the last stage the worker announced (see progress()) before it failed


class WorkerStartError(HigenError, RuntimeError):
    """The worker's own set-up failed (a missing runtime, a device that is absent): not retried."""

    def __init__(self, message: str, log_tail: str = ""):
        super().__init__(message)
        self.log_tail = log_tail


@dataclass
class WorkerSpec:
    """How to start one kind of worker: a module run as ``python -m module *args``."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    start_timeout_s: float = 120.0
    env: dict[str, str] | None = None
    recycle_after: int = 0  # answered requests before a planned restart (0: never); bounds slow leaks


class WorkerProcess:
    """Parent-side handle of one persistent worker; :meth:`submit` then :meth:`collect` one request."""

    def __init__(self, spec: WorkerSpec, log_dir: Path):
        self.spec = spec
        self.log_path = Path(log_dir) / f"{spec.name.replace(':', '_')}.log"
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.restarts = 0  # after a failure
        self.recycles = 0  # planned, after ``spec.recycle_after`` requests
        self.served = 0  # requests answered by the current child
        self._starting = False
        self.stage = ""  # the stage the pending request last announced (progress lines)
        self._buffer = b""
        self._log_offset = 0
        self._deadline = 0.0
        self._pending = False

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Start the child and wait for its ``ready`` line; returns what it says about itself."""
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        """Start the child without waiting for it (several workers then import in parallel)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **SINGLE_THREAD_ENV, **(self.spec.env or {}), "HIGEN_PROTOCOL_FD": str(write_fd)}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.spec.module, *self.spec.args],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=env,
                pass_fds=(write_fd,),
                start_new_session=True,
            )
        os.close(write_fd)
        self._reader = read_fd
        self._buffer = b""
        self._log_offset = self.log_path.stat().st_size
        self._deadline = time.monotonic() + self.spec.start_timeout_s
        self._pending = True
        self._starting = True
        self.served = 0

    def relaunch_if_dead(self) -> bool:
        """Launch a fresh child when there is none running (counting a restart when one died).
        Returns whether the caller must wait for a child with :meth:`wait_ready`: one launched now,
        or a recycled one still starting."""
        if self.alive:
            return self._starting
        if self.proc is not None:  # died between requests
            self.restarts += 1
            self.stop()
        self.launch()
        return True

    def wait_ready(self) -> dict[str, Any]:
        """Wait for the ``ready`` line of a launched child; a failed set-up raises WorkerStartError."""
        try:
            info = self.collect()
        except WorkerFailure as failure:
            raise WorkerStartError(f"{self.spec.name} died while starting ({failure.detail})", failure.log_tail)
        finally:
            self._starting = False
        if not info.get("ready"):
            tail = self.log_tail()
            self.stop()
            raise WorkerStartError(f"{self.spec.name}: {info.get('message')}", tail)
        self.info = info
        return info

    def stop(self) -> None:
        """Kill the child (and anything it started) and release its pipe."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        for stream in (self.proc.stdin,):
            try:
                stream.close()
            except OSError:
                pass
        os.close(self._reader)
        self.proc = None
        self._pending = False
        self._starting = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def fileno(self) -> int:
        """The reply pipe, for ``select`` over several workers."""
        return self._reader

    def rss_mb(self) -> float:
        """Resident memory of the child in MiB (0 when it is not running)."""
        if not self.alive:
            return 0.0
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    # -- requests --------------------------------------------------------------------------
    def submit(self, request: dict[str, Any], timeout_s: float) -> None:
        """Send one request; the answer is picked up by :meth:`collect`. Starts the child if needed."""
        if self.relaunch_if_dead():
            self.wait_ready()
        self._log_offset = self.log_path.stat().st_size
        self._deadline = time.monotonic() + timeout_s
        self._pending = True
        self.stage = ""
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()

    def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        self.submit(request, timeout_s)
        return self.collect()

    def collect(self) -> dict[str, Any]:
        """Wait for the answer to the pending request, or raise :class:`WorkerFailure`."""
        while True:
            reply = self.poll()
            if reply is not None:
                return reply
            select.select([self._reader], [], [], POLL_INTERVAL_S)

    def poll(self) -> dict[str, Any] | None:
        """Without blocking: the answer if it is complete, None while pending; WorkerFailure when
        the child died, hung past its deadline or outgrew its memory cap."""
        assert self._pending, "poll() without a pending request"
        while select.select([self._reader], [], [], 0)[0]:
            chunk = os.read(self._reader, 1 << 16)
            if not chunk:
                break
            self._buffer += chunk
            if b"\n" in self._buffer:
                break
        line = self._take_reply()
        if line is not None:
            self._pending = False
            reply = json.loads(line)
            if not self._starting:
                self._count_answer()
            return reply
        if not self.alive:
            self._fail_dead()
        if self.rss_mb() > self.spec.memory_limit_mb:
            self._fail("oom", f"resident memory above the cap of {self.spec.memory_limit_mb} MiB")
        if time.monotonic() > self._deadline:
            self._fail("timeout", f"no answer within the time limit ({self.spec.name})")
        return None

    def _count_answer(self) -> None:
        """Recycle the child once it answered ``recycle_after`` requests: the fresh one imports
        while the caller does other work, and :meth:`submit` waits for it to be ready."""
        self.served += 1
        if self.spec.recycle_after and self.served >= self.spec.recycle_after:
            self.recycles += 1
            self.stop()
            self.launch()

    def _take_reply(self) -> bytes | None:
        """The next complete reply line; progress lines before it only update :attr:`stage`."""
        line = self._take_line()
        while line is not None and line.startswith(PROGRESS_PREFIX):
            self.stage = json.loads(line)["stage"]
            line = self._take_line()
        return line

    def _take_line(self) -> bytes | None:
        if b"\n" not in self._buffer:
            return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _fail_dead(self) -> None:
        # Drain what the child managed to write before it died.
        while select.select([self._reader], [], [], 0)[0]:
            chunk = os.read(self._reader, 1 << 16)
            if not chunk:
                break
            self._buffer += chunk
        code = self.proc.returncode
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            self._fail("crash", f"killed by {name}", signal_name=name)
        self._fail("crash", f"exited with status {code}")

    def _fail(self, kind: str, detail: str, signal_name: str | None = None) -> None:
        tail = self.log_tail()
        self._take_reply()  # read the stage announced last, even in the final chunk
        self.stop()
        self.restarts += 1
        raise WorkerFailure(kind, detail, tail, signal_name, self.stage)

    def log_tail(self, max_chars: int = 4000) -> str:
        """What the child wrote to stdout/stderr since the current request was submitted."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")[-max_chars:]
        except OSError:
            return ""


# -- child side ------------------------------------------------------------------------------
Handler = Callable[[dict[str, Any]], dict[str, Any]]
PROGRESS_PREFIX = b'{"progress"'
_channel = None  # the protocol pipe of this worker process, once serve() opened it


def progress(stage: str) -> None:
    """Announce, inside a worker, the stage the current request enters (``compile``, ``run``), so
    that a crash or hang that follows is reported with its stage. Does nothing outside a worker."""
    if _channel is not None:
        _channel.write(json.dumps({"progress": True, "stage": stage}) + "\n")
        _channel.flush()


def serve(make_handler: Callable[[], tuple[Handler, dict[str, Any]]]) -> None:
    """Run a worker: build the handler (paying imports once), say ready, answer requests forever.

    Replies go to a private pipe (``HIGEN_PROTOCOL_FD``); stdout and stderr go to the worker log, so
    a native library that prints cannot corrupt the protocol.
    """
    global _channel
    channel = _channel = os.fdopen(int(os.environ["HIGEN_PROTOCOL_FD"]), "w", buffering=1)

    def reply(message: dict[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    try:
        handler, info = make_handler()
    except Exception as exc:  # the parent reports this as a failed start
        reply({"ready": False, "error_type": type(exc).__name__, "message": str(exc)})
        return
    reply({"ready": True, **info})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            reply(handler(request))
        except Exception as exc:
            reply({
                "status": "error",
                "error_type": type(exc).__name__,
                "message": str(exc),
                "traceback": traceback.format_exc(),
            })
