"""A model whose gradient-free forward runs on ONNX Runtime's CPU execution provider.

Calls that may need gradients (FGSM, the audit's PGD) and inputs the graph was not made for (another
device or dtype) still run the torch model, so the wrapper can replace the model everywhere: certify,
predict, Square's queries and the contract's probes take the fast path with no branch of their own.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from dsmooth_core.backends.spare_cores import run_in_chunks
from dsmooth_core.contract import evaluating
from dsmooth_core.models.info import ModelInfo

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

SESSIONS_KEPT = 4  # open sessions a process keeps (a few models, or thread counts), least recently used first out
# Sessions by (graph digest, threads), for the whole process. Why: a fresh session's first batches pay
# for its memory arena (about 50 ms of a 1.3 s certify job, measured); the app's worker receives a new
# wrapper with each job's work, and here finds the session its previous jobs warmed.
_SESSIONS: OrderedDict[tuple[str, int], InferenceSession] = OrderedDict()
_SESSIONS_LOCK = threading.Lock()


def open_session(graph: bytes, threads: int) -> InferenceSession:
    """A session with ``threads`` intra-op threads, one inter-op thread and sequential execution.

    The intra-op count is the caller's thread budget (the lab's, or torch's), so on a machine shared
    with a browser the graph uses the cores it was given and no more.
    """
    import onnxruntime as ort  # imported here: the torch backend must not need it

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: its optimiser notes are not the user's business
    # Idle pool threads sleep instead of spinning: on cores shared with a browser (or any other work) a
    # spinning thread takes the core another process needs. 2 threads, bundled ResNet-20, batch 200, 2 cores:
    # 3,054 images/s against 2,383 with one core kept busy, 5,150 against 5,429 on a quiet machine.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def shared_session(graph: bytes, digest: str, threads: int) -> InferenceSession:
    """The process's session for ``graph`` (whose sha256 is ``digest``) at ``threads``, opened on first use."""
    key = (digest, threads)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = open_session(graph, threads)
            while len(_SESSIONS) > SESSIONS_KEPT:
                _SESSIONS.popitem(last=False)
        _SESSIONS.move_to_end(key)
        return session


def _run(session: InferenceSession, pixels: np.ndarray) -> np.ndarray:
    """The session's logits for a batch of pixels."""
    return session.run(None, {session.get_inputs()[0].name: pixels})[0]


class OnnxForward(nn.Module):
    """``model`` with its inference-only calls answered by its ONNX graph.

    ``threads=None`` follows ``torch.get_num_threads()`` at every call (one session per count, made on
    first use and shared in the process by every wrapper of the same graph), so a job runner that sets
    torch's threads around a job sets the graph's as well. Pickling (the app's worker, Ray workers)
    sends the graph's bytes; each process opens its own sessions.
    """

    def __init__(self, model: nn.Module, graph: bytes, threads: int | None = None) -> None:
        super().__init__()
        # Not registered as a submodule: the wrapper then shows no channels_last convolution, so certify
        # hands it contiguous batches, the layout the graph takes (no copy either way, 20% of a forward
        # on 2 cores); and it has no parameters, so it is seen on the CPU, where the graph runs.
        object.__setattr__(self, "model", model)
        self.graph = graph
        self.digest = hashlib.sha256(graph).hexdigest()
        self.threads = threads

    @property
    def info(self) -> ModelInfo:
        """The wrapped model's description: name, input shape, classes, identity."""
        return self.model.info

    def extra_repr(self) -> str:
        return f"model={self.info.name!r}, threads={self.threads or 'torch.get_num_threads()'}"

    def thread_count(self) -> int:
        """Intra-op threads for a call now: the fixed count, else torch's."""
        return self.threads or torch.get_num_threads()

    def session(self) -> InferenceSession:
        """The session for the current thread budget (the process's, opened on first use)."""
        return shared_session(self.graph, self.digest, self.thread_count())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32:
            with evaluating(self.model):  # the contract's eval mode, which evaluating(self) cannot reach
                return self.model(x)
        pixels = x.contiguous().numpy()
        run = partial(_run, self.session())
        return torch.from_numpy(run_in_chunks(pixels, run, self._run_on_spare_core, self.thread_count()))

    def _run_on_spare_core(self, pixels: np.ndarray) -> np.ndarray:
        """A helper's chunk, on one intra-op thread: no pool thread of normal priority takes part in it."""
        return _run(shared_session(self.graph, self.digest, 1), pixels)

    def to(self, *args: Any, **kwargs: Any) -> nn.Module:  # type: ignore[override]
        """On the CPU, itself; to another device (a Ray worker's GPU), the torch model moved there, the
        fast forward on that device."""
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and device.type != "cpu":
            return self.model.to(*args, **kwargs)
        return self
