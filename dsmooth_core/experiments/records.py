"""Experiment records: one JSON line per (image, setting), appended as each certificate finishes.

A record carries its own identity (the model's identity, profile hash, attack, seed, n0, method, sigma,
k, n, alpha, image) and a ``key`` hashed from it, so a rerun skips what is done, shards can be merged by
concatenation, and the analyses need nothing but the records.

Fields: ``key``; identity: ``dataset split idx model model_hash model_identity profile_hash profile_k
attack attack_config seed n0 method sigma k n alpha``; results: ``label prediction correct p_lower
radius metric radius_ceiling l2_inscribed l1_radius pert_l2 pert_l1 pert_linf pert_mahalanobis covered
attack_success clean_base_correct base_fooled adv_smoothed_prediction seconds batch forward``.
``attack_success`` is the base model being wrong on the attacked image (also when it was already wrong on
the clean one); ``clean_base_correct`` is the base model being right on the clean image, and
``base_fooled`` both together: a *successful attack*. ``adv_smoothed_prediction`` is Cohen's PREDICT
(the record's noise, n and alpha) at the attacked image, -1 for an abstention, and null where the attack
was not successful (it is not run there). Records written before these three fields lack them: the
analyses count such records as unknown, never as false.
``model_identity`` is ``ModelInfo.identity`` (weights, program code, normalization, input size, classes,
architecture); records written before it have none, and a run refuses to add to their file.
``batch`` (the certification batch size) is recorded but not keyed.
``forward`` names the engine that ran the model's forward (``onnxruntime`` or ``torch``): keyed when it is
not torch (``settings.forward_identity``), so the two engines' records never stand in for each other, while
torch records keep the keys they always had; records written before it have none and were made by torch
(the analyses read a missing ``forward`` as ``"torch"``).
``pert_mahalanobis`` is measured in the St of the record's own rank k (the profile's rank for RandSmooth
and LSmooth); ``covered`` uses the method's own metric.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from dsmooth_core.appendfile import check_writable_file, locked_append
from dsmooth_core.settings import result_key

Record = dict[str, Any]
# What the resume and the analyses read: a line without these is not a record of this project.
REQUIRED_FIELDS = (
    "key",
    "method",
    "sigma",
    "k",
    "n",
    "alpha",
    "idx",
    "correct",
    "prediction",
    "radius",
    "metric",
    "l2_inscribed",
    "l1_radius",
    "covered",
    "attack_success",
    "seconds",
)


def record_key(identity: Mapping[str, Any]) -> str:
    """A short hash of everything that determines a record (built by ``settings.result_key``)."""
    return result_key(dict(identity))[:24]


def read_records(path: str | Path) -> list[Record]:
    """Every record of one JSON-lines file, plain or gzipped (``.gz``, for archived runs); an empty list
    when the file does not exist. Anything but a regular file (a device, a pipe) is refused."""
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():  # a device such as /dev/zero or /dev/full never ends: reading it would fill the memory
        raise ValueError(f"{path} is not a regular file; records are read from (and written to) a .jsonl file")
    records = []
    with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {number}, is not a JSON record: {exc}") from exc
            missing = [f for f in REQUIRED_FIELDS if f not in record] if isinstance(record, dict) else ["all"]
            if missing:
                raise ValueError(
                    f"{path}, line {number}, is not an experiment record (missing {', '.join(missing[:6])}"
                    f"{' ...' if len(missing) > 6 else ''}); is this a record file of `experiment run`?"
                )
            records.append(record)
    return records


def merge_records(records: Iterable[Record]) -> list[Record]:
    """Records deduplicated by key, first occurrence kept, order preserved (merging shards or reruns)."""
    seen: dict[str, Record] = {}
    for record in records:
        seen.setdefault(record["key"], record)
    return list(seen.values())


def load_records(paths: Iterable[str | Path]) -> list[Record]:
    """The merged records of several files (shards, resumed runs, other machines)."""
    return merge_records(record for path in paths for record in read_records(path))


class RecordStore:
    """An append-only JSON-lines file; knows the keys already written so a run can skip them.

    Writing happens inside ``with store:``, which holds an exclusive lock on the file (a second
    writer is refused with :class:`~dsmooth_core.appendfile.FileBusyError`) and drops a torn last
    line; an ``append`` outside it takes the lock for that one line.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix == ".gz":
            raise ValueError(f"{self.path} is a gzipped archive, read-only; write records to a .jsonl file")
        check_writable_file(self.path, "the records file")
        self._handle: TextIO | None = None
        self._lock: contextlib.ExitStack | None = None
        self._keys: set[str] = set()
        self.without_identity = 0  # records of an earlier version, which do not name the model's identity
        self._depth = 0
        if self.path.exists():
            with self:  # repairs a torn tail under the lock, and reads the keys
                pass

    def __enter__(self) -> RecordStore:
        self._depth += 1
        if self._lock is not None:  # nested: the run inside a caller's ``with store``
            return self
        stack = contextlib.ExitStack()
        try:
            self._handle = stack.enter_context(locked_append(self.path))
        except BaseException:
            self._depth -= 1
            raise
        self._lock = stack
        try:
            records = read_records(self.path)
        except BaseException:
            self.__exit__(None, None, None)  # a refused file keeps no lock
            raise
        self._keys = {record["key"] for record in records}  # what other runs added meanwhile
        self.without_identity = sum("model_identity" not in record for record in records)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth:
            return
        lock, self._lock, self._handle = self._lock, None, None
        if lock is not None:
            lock.close()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def append(self, record: Record) -> None:
        """Write one record as one line and flush it, so an interruption loses at most this line."""
        if self._handle is None:
            with self:
                self.append(record)
            return
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        self._keys.add(record["key"])
