"""Experiment records: one JSON line per (image, setting), appended as each certificate finishes.

A record carries its own identity (model and profile hashes, attack, seed, n0, method, sigma, k, n,
alpha, image) and a ``key`` hashed from it, so a rerun skips what is done, shards can be merged by
concatenation, and the analyses need nothing but the records.

Fields: ``key``; identity: ``dataset split idx model model_hash profile_hash profile_k attack
attack_config seed n0 method sigma k n alpha``; results: ``label prediction correct p_lower radius
metric radius_ceiling l2_inscribed l1_radius pert_l2 pert_l1 pert_linf pert_mahalanobis covered
attack_success seconds``. ``pert_mahalanobis`` is measured in the St of the record's own rank k
(the profile's rank for RandSmooth and LSmooth); ``covered`` uses the method's own metric.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Record = dict[str, Any]


def record_key(identity: Mapping[str, Any]) -> str:
    """A short hash of everything that determines a record."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def read_records(path: str | Path) -> list[Record]:
    """Every record of one JSON-lines file, plain or gzipped (``.gz``, for archived runs); an empty list
    when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {number}, is not a JSON record: {exc}") from exc
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
    """An append-only JSON-lines file; knows the keys already written so a run can skip them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix == ".gz":
            raise ValueError(f"{self.path} is a gzipped archive, read-only; write records to a .jsonl file")
        _drop_torn_tail(self.path)
        self._keys = {record["key"] for record in read_records(self.path)}

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def append(self, record: Record) -> None:
        """Write one record as one line and flush it, so an interruption loses at most this line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self._keys.add(record["key"])


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line left without its newline by an interrupted write (it cannot be a whole record)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data[: data.rfind(b"\n") + 1]
    warnings.warn(f"{path}: dropping an incomplete last line left by an interrupted run", stacklevel=3)
    path.write_bytes(keep)
