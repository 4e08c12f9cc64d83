"""``--engine`` and its Ray options, shared by ``certify`` and ``experiment run``; progress with an ETA."""

from __future__ import annotations

import argparse
import sys
import time

from dsmooth_core.progress import ProgressCallback
from dsmooth_core.scale import RayOptions, connect
from dsmooth_core.scale.cluster import check_task_fits, live_node_resources, require_ray


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("engine", "where the images are certified (records are the same on both)")
    group.add_argument("--engine", choices=("local", "ray"), default="local", help="this process, or Ray tasks")
    group.add_argument(
        "--address",
        default=None,
        help="Ray cluster: auto (the one `ray start` runs here), host:port or ray://host:port "
        "(default: start or join a local Ray instance)",
    )
    group.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs each Ray task reserves")
    group.add_argument("--gpus-per-task", type=float, default=0.0, help="GPUs each Ray task reserves (e.g. 1, 0.5)")
    group.add_argument("--chunk-size", type=int, default=4, help="images per Ray task (the unit of retry)")


def ray_options(args: argparse.Namespace) -> RayOptions | None:
    """The Ray options of ``--engine ray``, with this process joined to the cluster; ``None`` for local."""
    if args.engine != "ray":
        if args.address is not None:
            raise ValueError("--address needs --engine ray")
        return None
    options = RayOptions(
        address=args.address,
        cpus_per_task=args.cpus_per_task,
        gpus_per_task=args.gpus_per_task,
        chunk_size=args.chunk_size,
    )
    connect(options.address)
    check_task_fits(options, live_node_resources(require_ray()))  # before any file is written or model loaded
    return options


def images_progress(label: str, every_seconds: float = 2.0) -> ProgressCallback:
    """A callback over images that rewrites one terminal line: done / total, seconds per image, ETA."""
    start = time.perf_counter()
    last = [-every_seconds]

    def show(done: int, total: int) -> None:
        now = time.perf_counter() - start
        if now - last[0] < every_seconds and done < total:
            return
        last[0] = now
        rate, eta = (f"{now / done:.2f}", f"{(total - done) * now / done:.0f} s") if done else ("?", "?")
        end = "\n" if done >= total else ""
        print(f"\r{label}: {done}/{total} images, {rate} s/image, ETA {eta}  ", end=end, file=sys.stderr)

    return show
