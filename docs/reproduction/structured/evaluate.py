"""Records for "Where anisotropic smoothing can win" (docs/REPRODUCTION.md): every threat, every smoothing.

Per chunk of test images and per threat: RandSmooth, LSmooth and the paper's DSmooth at every sigma
(against the threat's ``THREAT_paper.pt``), and the DSmooth tuned for each sigma
(``THREAT_tuned_SIGMA.pt``), all as ``experiment run`` would write them. One ``RunMemo`` per chunk
lets the runs share what does not depend on the profile: each image is attacked once per threat and
its RandSmooth and LSmooth certificates are computed once, not once per threat. Chunks go through
every threat before the next chunk starts, so a stopped run leaves every threat with the same images;
a rerun skips the records it finds. Usage (one process per shard, one thread each):

  python docs/reproduction/structured/evaluate.py PROFILES RECORDS --shard 0/2 [--threats ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from dsmooth_core.backends import inference_model
from dsmooth_core.data import load_cifar10
from dsmooth_core.experiments import ExperimentSpec, RecordStore, RunMemo, attack_config, run_experiment
from dsmooth_core.experiments.plan import evaluation_indices, parse_shard
from dsmooth_core.models import DEFAULT_MODEL, load_model
from dsmooth_core.profiles import ThreatProfile

THREATS = ("patch", "lowfreq", "nonuniform", "reachable")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profiles", type=Path)
    parser.add_argument("records", type=Path)
    parser.add_argument("--threats", nargs="+", default=list(THREATS))
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--eval-size", type=int, default=500)
    parser.add_argument("--shard", default="0/1")
    parser.add_argument("--chunk", type=int, default=10, help="images per chunk")
    parser.add_argument("--weights", type=Path, default=None, help="default: the bundled model")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.records.mkdir(parents=True, exist_ok=True)
    model, how = inference_model(load_model(DEFAULT_MODEL, "cpu", weights=args.weights))
    print(how, flush=True)
    test = load_cifar10("test")
    shard = parse_shard(args.shard)
    indices = evaluation_indices(test.labels, args.eval_size, seed=0, shard=shard)
    runs = []  # (profile, spec, records file) per threat and profile
    for threat in args.threats:
        attack = attack_config(threat)
        common = {"n0": 100, "ns": (1000,), "alphas": (0.001,), "seed": 0, "attack_name": threat, "attack": attack}
        paper = ThreatProfile.load(args.profiles / f"{threat}_paper.pt")
        spec = ExperimentSpec(
            methods=("randsmooth", "lsmooth", "dsmooth"), sigmas=tuple(args.sigmas), ks=(100,), **common
        )
        runs.append((threat, paper, spec, args.records / f"{threat}_paper_{shard[0]}.jsonl"))
        for sigma in args.sigmas:
            tuned = ThreatProfile.load(args.profiles / f"{threat}_tuned_{sigma:g}.pt")
            spec = ExperimentSpec(methods=("dsmooth",), sigmas=(sigma,), ks=(tuned.covariance.k,), **common)
            runs.append((threat, tuned, spec, args.records / f"{threat}_tuned_{sigma:g}_{shard[0]}.jsonl"))
    stores = {path: RecordStore(path) for *_, path in runs}
    start = time.perf_counter()
    for first in range(0, len(indices), args.chunk):
        chunk = indices[first : first + args.chunk]
        memo = RunMemo()
        written = 0
        for _threat, profile, spec, path in runs:
            summary = run_experiment(model, test, chunk, profile, spec, stores[path], batch_size=400, memo=memo)
            written += summary.records_written
        done = first + len(chunk)
        print(
            f"shard {args.shard}: {done}/{len(indices)} images, {written} records in this chunk, "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
