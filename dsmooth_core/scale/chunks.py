"""Run one function over chunks of work on Ray: shared inputs shipped once, results yielded as they come.

The work function must be importable by the workers (a module-level function of this project). Its
shared inputs (model, profile, ...) are put in Ray's object store once; each worker process fetches
them on its first chunk and keeps them for the next ones, so a model is loaded once per worker.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

from dsmooth_core.contract import first_line
from dsmooth_core.device import model_device
from dsmooth_core.scale.cluster import (
    RayOptions,
    check_task_fits,
    live_node_resources,
    require_ray,
    ship_torchscript,
    worker_device,
)

WAIT_SECONDS = 1.0  # how often the driver looks up from waiting (progress, a request to stop)
ChunkWork = Callable[..., list]

_worker_cache: dict[str, Any] = {}  # in a worker process: the shared inputs of the current run, by object id


def map_chunks(
    work: ChunkWork,
    shared: Mapping[str, Any],
    chunks: Iterable[list],
    options: RayOptions,
    *,
    heartbeat: Callable[[], None] | None = None,
) -> Iterator[tuple[list, list]]:
    """Yield ``(chunk, work(chunk, **shared))`` for every chunk, in the order they finish.

    A task whose worker dies is retried (``options.max_retries``); a task that raises is not. At most
    twice as many tasks as the cluster can run at once are in flight, so a large test set is not
    copied into the object store at once. ``heartbeat`` is called about every second while waiting;
    closing the generator (or an exception in ``heartbeat``) cancels the tasks still in flight.
    """
    ray = require_ray()
    check_task_fits(options, live_node_resources(ray))  # before any task waits forever for a node
    ship_torchscript(ray)
    # in a list: workers fetch it themselves; models travel on the CPU, whatever device the driver used
    refs = {name: [_put(ray, name, value)] for name, value in shared.items()}
    # max_calls=0 keeps GPU workers (Ray recycles them after each task by default), and their loaded model
    task = ray.remote(max_calls=0)(_run_chunk).options(
        num_cpus=options.cpus_per_task,
        num_gpus=options.gpus_per_task,
        max_retries=options.max_retries,
        retry_exceptions=False,
    )
    window = _slots(ray, options) * 2
    pending: dict[Any, list] = {}
    remaining = iter(chunks)
    try:
        while True:
            for chunk in remaining:
                pending[task.remote(work, refs, chunk)] = chunk
                if len(pending) >= window:
                    break
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_SECONDS)
            if not done:
                if heartbeat is not None:
                    heartbeat()
                continue
            chunk = pending.pop(done[0])
            yield chunk, ray.get(done[0])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def _slots(ray: Any, options: RayOptions) -> int:
    """How many tasks the cluster can run at once (at least one)."""
    resources = ray.cluster_resources()
    slots = resources.get("CPU", 1) / options.cpus_per_task
    if options.gpus_per_task:
        slots = min(slots, resources.get("GPU", 0) / options.gpus_per_task)
    return max(1, int(slots))


def _put(ray: Any, name: str, value: Any) -> Any:
    """``value`` in the object store, or a one-line refusal when it cannot be pickled for the workers."""
    try:
        return ray.put(_on_cpu(value))
    except (TypeError, RuntimeError, pickle.PicklingError) as exc:  # what pickle raises on such objects
        raise ValueError(
            f"the {name} cannot be sent to Ray workers ({first_line(exc)}); a torch.export (.pt2) model runs "
            "with --engine local only (a state dict or TorchScript file runs on Ray)"
        ) from exc


def _on_cpu(value: Any) -> Any:
    """A model as workers receive it: on the CPU (a copy when the driver's is elsewhere); others as they are."""
    if isinstance(value, torch.nn.Module) and model_device(value).type != "cpu":
        return copy.deepcopy(value).to("cpu")
    return value


def _on_worker(value: Any) -> Any:
    """A fetched model moved once to the worker's device (its GPU when Ray gave it one)."""
    return value.to(worker_device()) if isinstance(value, torch.nn.Module) else value


def _run_chunk(work: ChunkWork, refs: Mapping[str, list], chunk: list) -> list:
    """In a worker: fetch the shared inputs (once per worker and run), size torch's threads, run ``work``."""
    import ray

    keys = {name: ref[0].hex() for name, ref in refs.items()}
    if set(_worker_cache) != set(keys.values()):  # a new run: drop the previous run's model and profile
        _worker_cache.clear()
        _worker_cache.update({key: _on_worker(ray.get(refs[name][0])) for name, key in keys.items()})
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    return work(chunk, **{name: _worker_cache[key] for name, key in keys.items()})
