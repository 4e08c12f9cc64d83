"""``run_experiment`` on a Ray cluster: the same plan and records, computed by workers chunk by chunk."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from dsmooth_core.data import ImageSet
from dsmooth_core.experiments.plan import ExperimentSpec, Setting
from dsmooth_core.experiments.records import Record, RecordStore
from dsmooth_core.experiments.runner import RunSummary, checked_noises, image_records, plan_run
from dsmooth_core.noise import SmoothingNoise
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.progress import ProgressCallback, report
from dsmooth_core.scale.chunks import map_chunks
from dsmooth_core.scale.cluster import RayOptions

# One image of a chunk: its index, pixels, label and the (setting, identity) pairs still to certify.
ImageJob = tuple[int, torch.Tensor, int, list[tuple[Setting, dict]]]


def run_experiment_on_ray(
    model: torch.nn.Module,
    images: ImageSet,
    indices: Sequence[int],
    profile: ThreatProfile,
    spec: ExperimentSpec,
    store: RecordStore,
    *,
    options: RayOptions,
    dataset: str = "cifar10",
    split: str = "test",
    batch_size: int = 400,
    progress: ProgressCallback | None = None,
) -> RunSummary:
    """Write the missing records of ``indices`` x ``spec``'s settings to ``store``, computed on Ray.

    Call :func:`~dsmooth_core.scale.connect` first. The images travel with their chunk, so workers
    need the project but not the data. ``progress`` counts images; when it asks to stop, the tasks in
    flight are cancelled and :class:`~dsmooth_core.progress.Cancelled` is raised, and the records of
    finished chunks stay in the store for a rerun to continue from, as after any interruption.
    """
    with store:  # one writer at a time, as in-process
        plan = plan_run(model, indices, profile, spec, store, dataset=dataset, split=split)
        todo = [(idx, jobs) for idx, jobs in plan.todo.items() if jobs]
        if not todo:
            return RunSummary(images=len(plan.todo), images_skipped=plan.images_skipped, records_written=0)
        shared = {
            "model": model,
            "profile": profile,
            "noises": plan.noises,
            "spec": spec,
            "batch_size": batch_size,
        }
        done, written = 0, 0
        report(progress, done, len(todo))
        results = map_chunks(
            certify_chunk,
            shared,
            _chunks(images, todo, options.chunk_size),
            options,
            heartbeat=lambda: report(progress, done, len(todo)),
        )
        with contextlib.closing(results):
            for chunk, records in results:
                for record in records:
                    store.append(record)
                written += len(records)
                done += len(chunk)
                report(progress, done, len(todo))
        return RunSummary(images=len(plan.todo), images_skipped=plan.images_skipped, records_written=written)


def certify_chunk(
    chunk: list[ImageJob],
    *,
    model: torch.nn.Module,
    profile: ThreatProfile,
    noises: dict[tuple, SmoothingNoise],
    spec: ExperimentSpec,
    batch_size: int,
) -> list[Record]:
    """In a worker: every record of every image of the chunk (what the in-process engine would write).

    The worker's copies of the model and noises are checked once per chunk, not once per certificate.
    """
    with checked_noises(model, noises.values()):
        return [
            record
            for idx, x, label, jobs in chunk
            for record in image_records(model, idx, x, label, jobs, noises, profile, spec, batch_size)
        ]


def _chunks(images: ImageSet, todo: list[tuple[int, list]], size: int) -> Iterator[list[ImageJob]]:
    """The images to certify, ``size`` at a time, their pixels read only when their chunk is sent."""
    for start in range(0, len(todo), size):
        part = todo[start : start + size]
        pixels = images.tensor([idx for idx, _ in part])
        yield [(idx, x, int(images.labels[idx]), jobs) for (idx, jobs), x in zip(part, pixels, strict=True)]
