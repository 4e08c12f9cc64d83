"""Joining a Ray cluster (or starting a local one) and the per-task resources a run asks for."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

import dsmooth_core
from dsmooth_core.extras import SCALE, MissingExtraError, require

PROBE_SECONDS = 5.0  # Ray itself waits a minute or more on an address nobody listens on
CLIENT_PORT = 10001  # Ray Client's default port, for ``ray://host`` without one


_joined: dict[str, str | None] = {}  # the address this process joined, under "address"


class ClusterUnavailableError(ValueError):
    """Ray is not installed, or no Ray cluster answers at the address given."""


@dataclass(frozen=True)
class RayOptions:
    """Where to run and what each task (one chunk of images) reserves on its node."""

    address: str | None = None  # None: start or join a local instance; "auto"; "host:port"; "ray://host:port"
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    chunk_size: int = 4  # images per task: the unit of retry, and of progress on the driver
    max_retries: int = 3  # a task whose worker dies is run again, up to this many times

    def __post_init__(self) -> None:
        if self.cpus_per_task <= 0 or self.gpus_per_task < 0:
            raise ValueError("--cpus-per-task must be positive and --gpus-per-task at least 0")
        if self.chunk_size < 1:
            raise ValueError(f"chunks hold at least one image, got {self.chunk_size}")


def require_ray() -> ModuleType:
    """The ``ray`` module, or a message saying how to install it."""
    try:
        return require("ray", SCALE, "the Ray engine")
    except MissingExtraError as exc:
        raise ClusterUnavailableError(str(exc)) from exc


def connect(address: str | None = None, *, num_cpus: int | None = None, timeout: float = PROBE_SECONDS) -> None:
    """Join the cluster at ``address`` (``None``: start or join a local instance); a no-op when joined.

    A host:port address is probed first, so a wrong one fails within ``timeout`` seconds with a clear
    message instead of Ray's own long wait (and the cluster joined before stays joined). A reachable
    new address leaves the cluster joined before. ``num_cpus`` only sizes a local instance this starts.
    """
    ray = require_ray()
    if ray.is_initialized() and address in (_joined.get("address", address), ray.get_runtime_context().gcs_address):
        return
    if address and address != "auto":
        _probe(address, timeout)
    if ray.is_initialized():
        ray.shutdown()
    options: dict = {"logging_level": logging.WARNING}
    if address is None:
        options.update(num_cpus=num_cpus, include_dashboard=False)
    else:  # a cluster's workers get this package's code from Ray; their Python still needs its requirements
        options.update(runtime_env={"py_modules": [str(Path(dsmooth_core.__file__).parent)]})
    if address and address.startswith("ray://") and ":" not in address.removeprefix("ray://"):
        address = f"{address}:{CLIENT_PORT}"
    try:
        ray.init(address=address, **options)
    except ConnectionError as exc:
        hint = "" if address == "auto" else " (with token authentication: RAY_AUTH_MODE=token and its token here)"
        raise ClusterUnavailableError(f"could not join the Ray cluster at --address {address}: {exc}{hint}") from exc
    _joined["address"] = address


def _probe(address: str, timeout: float) -> None:
    """Fail fast when nothing listens at ``address`` (``host:port`` or ``ray://host[:port]``)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":") if ":" in target else (target, "", str(CLIENT_PORT))
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except ValueError as exc:
        raise ClusterUnavailableError(f"--address is auto, host:port or ray://host:port, got {address!r}") from exc
    except OSError as exc:
        raise ClusterUnavailableError(
            f"no Ray cluster answers at {address} (waited {timeout:.0f} s: {exc}); "
            "start one with `ray start --head` or check --address"
        ) from exc


def worker_device() -> torch.device:
    """The GPU Ray gave this task, or the CPU when it gave none."""
    import ray

    return torch.device("cuda") if ray.get_gpu_ids() else torch.device("cpu")
