"""The forward the app's certification runs: prepared once per model in the server, and its measured rate.

Why in the server, once: exporting the model's ONNX graph and checking it against torch take seconds for
a new model (a fraction of a second from the disk cache); done here, cached per model, every certify job
receives the checked graph with its work and starts computing at once, and the page knows before the job
which forward runs (its result key names it) and why a model stays on torch. An uploaded program
(TorchScript, torch.export) is exported and probed in a worker process instead, since both run it and it
may never return; the server only receives the checked graph. The rate is measured per model, forward
and thread count (again every :data:`RATE_SECONDS`), so the Certify page can say which n this machine
affords.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import streamlit as st
import torch

from dsmooth_core.backends import OnnxForward, default_backend, forward_name, inference_model
from dsmooth_core.backends.spare_cores import supported
from dsmooth_core.backends.throughput import forward_rate
from dsmooth_lab_ui import jobs, pool, programs, resources, tasks, threads, watchdog

# The measured batch: the page's batch up to this. Small, so a measurement costs a fraction of a second even
# on a busy machine; ONNX Runtime's rate is flat from 100 to 400 images a batch, torch's about 15% lower at
# 100 than at 200 (measured): "about" errs on the safe side.
RATE_BATCH_CAP = 100
_THREADS_LOCK = threading.Lock()  # torch's thread count is the process's: one measurement sets it at a time


@dataclass(frozen=True)
class Forward:
    """The model as the jobs run it, the engine's name (``onnxruntime`` or ``torch``) and why, in one line."""

    model: torch.nn.Module
    name: str
    note: str

    @property
    def fell_back(self) -> bool:
        """The backend asked for could not run this model: it runs on torch, and the note says why."""
        return self.note.startswith("note:")


@st.cache_resource(show_spinner="Preparing the model's forward (once per model) ...", max_entries=4)
def _prepared(model_key: str, backend: str, _model: torch.nn.Module) -> Forward:
    if backend != "torch" and programs.carries_program(_model):
        return _exported_in_worker(_model, backend)
    model, note = inference_model(_model, backend)  # threads: the job's, set by the worker around each job
    return Forward(model, forward_name(model), note)


class _Quiet:
    """A progress callback for work nobody watches but the watchdog: it never asks to stop."""

    def stage(self, label: str) -> None:
        pass

    def __call__(self, done: int, total: int) -> bool:
        return False


def _exported_in_worker(model: torch.nn.Module, backend: str) -> Forward:
    """An uploaded program's checked graph, exported and probed in a worker process, never in the server.

    Why: both run the program, which may never return; a worker that sends nothing for the stall limit
    (``DSMOOTH_JOB_STALL_SECONDS``) is ended, and the model certifies on torch with a note saying why.
    Without worker processes (``DSMOOTH_JOB_PROCESSES=0``) all work runs in the server anyway.
    """
    data = pool.payload(functools.partial(tasks.onnx_graph, model, backend))
    if data is None:
        fast, note = inference_model(model, backend)
        return Forward(fast, forward_name(fast), note)
    try:
        graph, note = jobs.MANAGER.workers.run(data, 1, _Quiet(), threading.Event(), watchdog.from_environment())
    except (pool.WorkerFailed, watchdog.NoProgress) as exc:
        why = f"note: exporting the uploaded program to onnxruntime failed ({exc}); using torch"
        return Forward(model, "torch", why)
    if graph is None:
        return Forward(model, "torch", note)
    return Forward(OnnxForward(model, graph), "onnxruntime", note)


def prepared(model: torch.nn.Module) -> Forward:
    """``model`` on the app's backend (``$DSMOOTH_BACKEND``, else auto), prepared once per model identity."""
    return _prepared(resources.model_key(model), default_backend(), model)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Torch's (and a thread-following ONNX session's) intra-op threads set to ``count`` for the body."""
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(before)


RATE_SECONDS = 900  # a measurement's life: the machine's load changes, and a new one costs under a second


@st.cache_data(show_spinner="Measuring this machine's forward rate ...", max_entries=16, ttl=RATE_SECONDS)
def _rate(model_key: str, forward: str, thread_count: int, batch: int, _model: torch.nn.Module) -> float:
    with _torch_threads(thread_count), threads.lending_spare_cores(thread_count):  # as a job runs it
        return forward_rate(_model, batch=batch)


def spare_cores_lent(fast: Forward, thread_count: int) -> int:
    """Cores whose idle time a job of ``thread_count`` threads lends ``fast``'s batches (ONNX Runtime only)."""
    return threads.spare(thread_count) if isinstance(fast.model, OnnxForward) and supported() else 0


def rate(fast: Forward, batch: int) -> tuple[float, int] | None:
    """Images per second of ``fast``'s forward at the thread count a certify job of ``batch`` gets, and that
    count; ``None`` where that forward is an uploaded program, which may never return and so runs only in jobs
    (its checked ONNX graph is measured: the graph's operators always return)."""
    if programs.carries_program(fast.model):
        return None
    count = threads.for_batch(batch)
    measured = min(batch, RATE_BATCH_CAP)
    return _rate(resources.model_key(fast.model), fast.name, count, measured, fast.model), count
