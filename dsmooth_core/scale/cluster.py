"""Joining a Ray cluster (or starting a local one) and the per-task resources a run asks for."""

from __future__ import annotations

import io
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

import dsmooth_core
from dsmooth_core.extras import SCALE, MissingExtraError, require

PROBE_SECONDS = 5.0  # Ray itself waits a minute or more on an address nobody listens on
CLIENT_PORT = 10001  # Ray Client's default port, for ``ray://host`` without one
# Ray's GCS and Ray Client are gRPC servers, so HTTP/2: a client opens with this preface and an empty
# SETTINGS frame, and the server's first frame must be SETTINGS (RFC 9113, section 3.4).
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
HTTP2_SETTINGS = 4  # the frame type byte, fourth of the nine-byte frame header


_joined: dict[str, str | None] = {}  # the address this process joined, under "address"


class ClusterUnavailableError(ValueError):
    """Ray is not installed, no Ray cluster answers at the address given, or none of its nodes can run the tasks."""


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
        probe_address(address, timeout)
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


def probe_address(address: str, timeout: float = PROBE_SECONDS) -> None:
    """Fail fast when nothing listens at ``address`` (``host:port`` or ``ray://host[:port]``)."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":") if ":" in target else (target, "", str(CLIENT_PORT))
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as connection:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return  # a TLS server would not answer plain HTTP/2; Ray checks its handshake itself
            connection.sendall(HTTP2_PREFACE)
            header = _read_up_to(connection, 9)
    except ValueError as exc:
        raise ClusterUnavailableError(f"--address is auto, host:port or ray://host:port, got {address!r}") from exc
    except OSError as exc:
        raise ClusterUnavailableError(
            f"no Ray cluster answers at {address} (waited {timeout:.0f} s: {exc}); "
            "start one with `ray start --head` or check --address"
        ) from exc
    if len(header) < 9 or header[3] != HTTP2_SETTINGS:
        answer = header.decode("ascii", "replace").split("\r")[0].strip() or "it closed the connection"
        raise ClusterUnavailableError(
            f"the server at {address} is not a Ray cluster: it does not speak gRPC (its answer: {answer!r}); "
            "check --address (a Ray head's GCS listens on port 6379 by default, Ray Client on 10001)"
        )


def _read_up_to(connection: socket.socket, size: int) -> bytes:
    """Up to ``size`` bytes, fewer when the peer closes first (the socket's timeout bounds each read)."""
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def check_task_fits(options: RayOptions, nodes: Iterable[Mapping[str, float]]) -> None:
    """Refuse options no node of the cluster can run: Ray would queue such tasks forever, without a word.

    ``nodes`` are the resources of the cluster's live nodes (``"CPU"``, ``"GPU"``, as Ray reports them).
    """
    nodes = list(nodes)
    if any(
        node.get("CPU", 0.0) >= options.cpus_per_task and node.get("GPU", 0.0) >= options.gpus_per_task
        for node in nodes
    ):
        return
    largest = max(nodes, key=lambda node: (node.get("GPU", 0.0), node.get("CPU", 0.0)), default={})
    total_cpus, total_gpus = (sum(node.get(name, 0.0) for node in nodes) for name in ("CPU", "GPU"))
    raise ClusterUnavailableError(
        f"no node of the Ray cluster can run a task with --cpus-per-task {options.cpus_per_task:g} and "
        f"--gpus-per-task {options.gpus_per_task:g}: its {len(nodes)} node(s) hold {total_cpus:g} CPUs and "
        f"{total_gpus:g} GPUs in all, the largest {largest.get('CPU', 0.0):g} CPUs and {largest.get('GPU', 0.0):g} "
        "GPUs; ask for at most that per task"
    )


def live_node_resources(ray: ModuleType) -> list[dict[str, float]]:
    """The resources of each live node of the joined cluster (the whole cluster's as one where Ray
    cannot list its nodes: still enough to see that a CPU-only cluster has no GPU)."""
    try:
        nodes = ray.nodes()
    except Exception:  # a client connection may not list nodes; the totals still tell a lot
        return [dict(ray.cluster_resources())]
    return [dict(node["Resources"]) for node in nodes if node.get("Alive")]


def ship_torchscript(ray: ModuleType) -> None:
    """Let TorchScript modules travel to Ray workers: pickle refuses them, but ``torch.jit.save`` writes
    them as bytes that ``torch.jit.load`` reads back (the user trusted the program to run on the driver)."""
    try:
        ray.util.register_serializer(
            torch.jit.RecursiveScriptModule, serializer=_script_to_bytes, deserializer=_script_from_bytes
        )
    except Exception:  # a connection without this hook (Ray Client): such a model is refused when it is sent
        return


def _script_to_bytes(module: torch.jit.ScriptModule) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


def _script_from_bytes(data: bytes) -> torch.jit.ScriptModule:
    return torch.jit.load(io.BytesIO(data), map_location="cpu")


def worker_device() -> torch.device:
    """The GPU Ray gave this task, or the CPU when it gave none."""
    import ray

    return torch.device("cuda") if ray.get_gpu_ids() else torch.device("cpu")
