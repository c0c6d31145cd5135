"""HiGen's error types: what library code raises when it cannot go on, and the command line
(:mod:`higen.cli`) prints as one line, ``higen: error: MESSAGE``, with exit status 2.

Library code raises these and never prints or exits; only the command line decides how an error
ends. Every message is one line that says what to do. The types that belong to one room subclass
these where they live: :class:`higen.bugs.case.CaseError` (a bad case folder),
:class:`higen.backends.base.BackendMissing`, :class:`higen.workers.WorkerStartError`,
:class:`higen.runtimes.RuntimeInstallError`, :class:`higen.agents.checkpoint.CheckpointError`, ...
"""

from __future__ import annotations


class HigenError(Exception):
    """An error HiGen reports in one line (exit status 2): a user's mistake (:class:`UserError`) or
    what the environment lacks (a runtime, a device, a worker that does not start)."""


class UserError(HigenError):
    """A mistake the user can fix (a flag, a file, a folder, a setting); the message says how."""


class ModelError(UserError):
    """An ONNX file HiGen cannot run as given: missing, invalid, or with inputs of dynamic shape.
    ``higen maximize`` skips such a model and goes on with the others."""
