"""Spare cores: ONNX Runtime batches shared with low-priority helper threads give exactly the same logits
and certificates, in batch order; helpers run under SCHED_IDLE or not at all; a helper that fails or
falls behind costs only time."""

from __future__ import annotations

import functools
import os
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from dsmooth_core import certify
from dsmooth_core.backends import OnnxForward, inference_model, onnx_graph, spare_cores
from dsmooth_core.models import ModelInfo, wrap
from dsmooth_core.noise import make_noise
from dsmooth_lab_ui import scheduler, threads
from tests import worker_work

CHUNK = spare_cores.CHUNK
linux_only = pytest.mark.skipif(not spare_cores.supported(), reason="a thread's own priority is set on Linux only")


@pytest.fixture(autouse=True)
def graph_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(onnx_graph.CACHE_ENV, str(tmp_path))


def fast_tiny() -> OnnxForward:
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 10)
    )
    info = ModelInfo("tiny", "toy", (3, 8, 8), tuple(f"c{i}" for i in range(10)), "test", std=(0.25,) * 3)
    fast, note = inference_model(wrap(net, info), "onnxruntime", threads=1)
    assert isinstance(fast, OnnxForward), note
    return fast


class Recorder:
    """A chunk runner that notes which thread ran each chunk, at which priority, and takes its time."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.calls: list[tuple[int, int, int]] = []  # (rows, thread id, scheduling policy)
        self.lock = threading.Lock()

    def __call__(self, part: np.ndarray) -> np.ndarray:
        native = threading.get_native_id()
        policy = os.sched_getscheduler(native) if spare_cores.supported() else 0
        with self.lock:
            self.calls.append((len(part), native, policy))
        time.sleep(self.seconds)  # gives up the interpreter lock, as ONNX Runtime's run does
        return part * 2


def test_without_lent_cores_a_batch_is_one_call() -> None:
    batch = np.arange(4 * CHUNK, dtype=np.float32)
    run, helper = Recorder(), Recorder()
    np.testing.assert_array_equal(spare_cores.run_in_chunks(batch, run, helper), batch * 2)
    assert [rows for rows, _, _ in run.calls] == [len(batch)] and not helper.calls
    assert spare_cores.lent() == 0


@linux_only
def test_helpers_share_the_chunks_in_order_at_the_lowest_priority() -> None:
    batch = np.arange(8 * CHUNK + 7, dtype=np.float32)  # a last chunk of 7 rows
    run, helper = Recorder(0.02), Recorder(0.02)
    with spare_cores.spare_cores(1):
        assert spare_cores.lent() == 1
        out = spare_cores.run_in_chunks(batch, run, helper)
    assert spare_cores.lent() == 0  # lent for the body only
    np.testing.assert_array_equal(out, batch * 2)  # every row once, in batch order
    assert sum(rows for rows, _, _ in run.calls + helper.calls) == len(batch)
    assert run.calls and helper.calls, "both the caller and the helper take chunks"
    assert {thread for _, thread, _ in run.calls} == {threading.get_native_id()}
    assert threading.get_native_id() not in {thread for _, thread, _ in helper.calls}
    assert {policy for _, _, policy in helper.calls} == {os.SCHED_IDLE}
    assert {policy for _, _, policy in run.calls} == {os.SCHED_OTHER}  # the caller keeps its own


@linux_only
def test_the_caller_takes_a_chunk_per_intra_op_thread() -> None:
    batch = np.arange(9 * CHUNK, dtype=np.float32)
    run, helper = Recorder(0.02), Recorder(0.02)
    with spare_cores.spare_cores(1):
        out = spare_cores.run_in_chunks(batch, run, helper, caller_threads=3)
    np.testing.assert_array_equal(out, batch * 2)
    assert run.calls[0][0] == 3 * CHUNK and {rows for rows, _, _ in helper.calls} == {CHUNK}
    assert all(rows % CHUNK == 0 and rows <= 3 * CHUNK for rows, _, _ in run.calls)  # the last piece may be short
    with spare_cores.spare_cores(1):
        spare_cores.run_in_chunks(batch[: 4 * CHUNK - 1], run, helper, caller_threads=3)  # no room for a helper
    assert run.calls[-1][0] == 4 * CHUNK - 1


@linux_only
def test_small_batches_are_not_split() -> None:
    batch = np.arange(2 * CHUNK - 1, dtype=np.float32)
    run, helper = Recorder(), Recorder()
    with spare_cores.spare_cores(3):
        spare_cores.run_in_chunks(batch, run, helper)
    assert len(run.calls) == 1 and not helper.calls


@linux_only
def test_a_failing_helper_costs_only_its_chunk() -> None:
    def broken(part: np.ndarray) -> np.ndarray:
        raise RuntimeError("the graph failed in a helper")

    batch = np.arange(6 * CHUNK, dtype=np.float32)
    run = Recorder(0.02)
    with spare_cores.spare_cores(1):
        np.testing.assert_array_equal(spare_cores.run_in_chunks(batch, run, broken), batch * 2)
    assert sum(rows for rows, _, _ in run.calls) == len(batch)  # the caller ran the helper's chunk again


@linux_only
def test_a_starved_helper_never_holds_the_batch_up() -> None:
    """On a machine busy everywhere a SCHED_IDLE helper may get no time: the caller runs its chunk."""
    batch = np.arange(4 * CHUNK, dtype=np.float32)
    run, release, taken = Recorder(0.02), threading.Event(), threading.Event()

    def stuck(part: np.ndarray) -> np.ndarray:
        taken.set()
        release.wait(10)  # a helper that gets no CPU time until the test ends
        return part * 2

    start = time.perf_counter()
    try:
        with spare_cores.spare_cores(1):
            out = spare_cores.run_in_chunks(batch, run, stuck)
        took = time.perf_counter() - start
    finally:
        release.set()  # the pool's thread is free again for the next test
    np.testing.assert_array_equal(out, batch * 2)
    assert taken.is_set(), "the helper took a chunk"
    assert took < 1.0, f"the caller waited {took:.2f} s for a stuck helper"
    assert sum(rows for rows, _, _ in run.calls) == len(batch)


@linux_only
def test_a_helper_that_cannot_step_back_never_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError("not allowed")

    monkeypatch.setattr(spare_cores.os, "sched_setscheduler", refuse)
    monkeypatch.setattr(spare_cores, "_pool", None)  # a fresh pool, whose threads try to step back and fail
    batch = np.arange(6 * CHUNK, dtype=np.float32)
    run, helper = Recorder(0.01), Recorder()
    with spare_cores.spare_cores(1):
        np.testing.assert_array_equal(spare_cores.run_in_chunks(batch, run, helper), batch * 2)
    assert not helper.calls and len(run.calls) == 6
    spare_cores._pool.shutdown()


def test_refused_counts() -> None:
    with pytest.raises(ValueError, match=">= 0"), spare_cores.spare_cores(-1):
        pass


@linux_only
def test_logits_and_certificates_equal_with_and_without_a_spare_core() -> None:
    fast = fast_tiny()
    x = torch.rand(5 * CHUNK + 3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        alone = fast(x)
        with spare_cores.spare_cores(1):
            shared = fast(x)
    assert torch.equal(alone, shared)  # each image's logits do not depend on its chunk
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = make_noise("randsmooth", 0.5)
    plain = certify(fast, image, noise, 50, 400, 0.001, 200, torch.Generator().manual_seed(2))
    with spare_cores.spare_cores(1):
        helped = certify(fast, image, noise, 50, 400, 0.001, 200, torch.Generator().manual_seed(2))
    assert len(set(plain.counts_estimation) - {0}) > 1, "the test needs an image whose votes split"
    assert (plain.counts_selection, plain.counts_estimation, plain.radius) == (
        helped.counts_selection,
        helped.counts_estimation,
        helped.radius,
    )


def test_the_spare_cores_are_those_the_threads_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    assert [threads.spare(t) for t in (1, 3, 4, 6)] == [3, 1, 0, 0]
    monkeypatch.setenv(threads.SPARE_ENV, "off")
    assert threads.spare(1) == 0
    monkeypatch.setenv(threads.SPARE_ENV, "2")
    with pytest.raises(ValueError, match="'on' or 'off'"):
        threads.spare(1)


def test_a_job_lends_the_cores_its_threads_leave() -> None:
    expected = threads.spare(1) if spare_cores.supported() else 0
    manager = scheduler.JobManager(slots=1)
    try:
        for work in (functools.partial(worker_work.lent_cores), lambda progress: spare_cores.lent()):
            job = scheduler.Job(kind="t", title="lent", key=id(work), work=work, deliver=lambda _: None, threads=1)
            manager.submit(job)
            assert job.ended.wait(120) and job.state == scheduler.DONE, job.error
            assert job.result == expected  # in a worker process, and in a thread of the server
    finally:
        manager.workers.close()
