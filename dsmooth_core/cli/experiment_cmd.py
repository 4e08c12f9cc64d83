"""``experiment run``: certify a balanced CIFAR-10 test subset with several methods, resumably and shardable.
``experiment analyse``: merge record files (shards, reruns) and write CSV tables and charts.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from dsmooth_core.attacks import PRESETS
from dsmooth_core.cli.common import WEIGHTS_HELP, terminal_progress
from dsmooth_core.cli.engine_options import add_engine_arguments, images_progress, ray_options
from dsmooth_core.cli.model_file_options import add_model_file_options
from dsmooth_core.cli.threat_options import load_cifar_model
from dsmooth_core.data import load_cifar10
from dsmooth_core.experiments import (
    ExperimentSpec,
    RecordStore,
    attack_config,
    evaluation_indices,
    experiment_calibration,
    load_records,
    parse_shard,
    run_experiment,
    write_report,
)
from dsmooth_core.models import DEFAULT_MODEL
from dsmooth_core.noise import METHODS
from dsmooth_core.profiles import ThreatProfile, calibrate
from dsmooth_core.scale import run_experiment_on_ray


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="certify a test subset with several methods; analyse the records")
    actions = p.add_subparsers(dest="action", required=True)
    _register_run(actions)
    _register_analyse(actions)


def _register_run(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("run", help="certify a balanced test subset; one JSON line per (image, setting)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="a registry name (a CIFAR-10 model)")
    p.add_argument("--untrained", action="store_true", help="untrained weights from a fixed seed (tests, demos)")
    p.add_argument("--weights", type=Path, default=None, help=WEIGHTS_HELP)
    add_model_file_options(p)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--sigmas", nargs="+", type=float, default=[0.25], help="noise level(s), per-pixel std")
    p.add_argument("--k", nargs="+", type=int, default=[10], help="DSmooth rank(s); several give the k ablation")
    p.add_argument("--n0", type=int, default=100, help="selection samples")
    p.add_argument("--n", nargs="+", type=int, default=[1000], help="estimation samples; several: n ablation")
    p.add_argument("--alpha", nargs="+", type=float, default=[0.001], help="failure rate(s); several: ablation")
    p.add_argument("--seed", type=int, default=0, help="subsets, attacks and noise are all seeded from it")
    p.add_argument("--attack", choices=sorted(PRESETS), default="paper", help="the threat preset")
    p.add_argument("--attack-queries", type=int, default=None, help="override the preset's Square query budget")
    p.add_argument("--eval-size", type=int, default=100, help="balanced subset of the test split")
    p.add_argument("--calibration-size", type=int, default=200, help="balanced subset of the train split")
    p.add_argument("--keep", choices=("successful", "nonzero"), default="successful", help="perturbations fitted")
    p.add_argument("--profile", type=Path, help="use this threat profile file instead of building one")
    p.add_argument("--profile-dir", type=Path, default=Path("runs/profiles"), help="cache of built profiles")
    p.add_argument("--profile-k", type=int, default=None, help="rank of the fitted profile (default: max of --k)")
    p.add_argument("--records", type=Path, required=True, help="JSON-lines file; finished records are skipped")
    p.add_argument("--shard", default="0/1", help="i/N: every N-th image of the subset, starting at the i-th")
    p.add_argument("--batch", type=int, default=400, help="noise draws (and calibration images) per batch")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--device", default="auto")
    add_engine_arguments(p)
    p.set_defaults(run=run)


def _register_analyse(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("analyse", help="merge record files and write CSV tables and charts")
    p.add_argument("records", nargs="+", type=Path, help="JSON-lines files (shards, reruns); merged by key")
    p.add_argument("--out", type=Path, required=True, help="folder for the CSV tables and the charts")
    p.add_argument(
        "--gamma",
        type=float,
        default=0.01,
        help="also report certified accuracy that holds with probability 1 - gamma (0: leave it out)",
    )
    p.add_argument("--format", choices=("png", "html"), default="png", help="charts as PNG (kaleido) or HTML")
    p.set_defaults(run=analyse)


def run(args: argparse.Namespace) -> int:
    created = not args.records.exists()
    try:
        return _run(args)
    finally:  # a refused or cancelled run that wrote no record leaves no empty file behind
        if created and args.records.is_file() and args.records.stat().st_size == 0:
            args.records.unlink()


def _run(args: argparse.Namespace) -> int:
    spec = ExperimentSpec(  # every setting validated before any work
        methods=tuple(dict.fromkeys(args.methods)),
        sigmas=tuple(args.sigmas),
        ks=tuple(args.k),
        n0=args.n0,
        ns=tuple(args.n),
        alphas=tuple(args.alpha),
        seed=args.seed,
        attack_name=args.attack,
        attack=attack_config(args.attack, args.attack_queries),
    )
    options = ray_options(args)  # before any model or data, so a bad --address fails early
    store = RecordStore(args.records)  # a file that is not a record file is refused before any work
    model = load_cifar_model(args, "experiments run on CIFAR-10 and")
    test = load_cifar10("test", args.data_dir)
    indices = evaluation_indices(test.labels, args.eval_size, args.seed, parse_shard(args.shard))
    if args.profile:
        profile = ThreatProfile.load(args.profile)
        if profile.attack != spec.attack.to_dict():
            print(f"note: {args.profile} was fitted to another attack than the one evaluated: {profile.attack}")
    else:
        profile = calibrate(
            model,
            load_cifar10("train", args.data_dir),
            experiment_calibration(spec, args.calibration_size, args.profile_k or max(args.k), args.keep),
            cache_dir=args.profile_dir,
            batch_size=args.batch,
            progress=terminal_progress("calibration attack"),
        )
    if options is None:
        runner, progress = run_experiment, terminal_progress(f"shard {args.shard}")
    else:
        runner, progress = (
            functools.partial(run_experiment_on_ray, options=options),
            images_progress(f"shard {args.shard}"),
        )
    summary = runner(
        model,
        test,
        indices,
        profile,
        spec,
        store,
        batch_size=args.batch,
        progress=progress,
    )
    print(
        f"{summary.images} images ({summary.images_skipped} already done), "
        f"{summary.records_written} records written to {args.records}"
    )
    return 0


def analyse(args: argparse.Namespace) -> int:
    missing = [str(path) for path in args.records if not path.exists()]
    if missing:
        raise FileNotFoundError(f"no such record file: {', '.join(missing)}")
    records = load_records(args.records)
    files = write_report(records, args.out, gamma=args.gamma or None, image_format=args.format)
    print(f"{len(records)} records from {len(args.records)} file(s)")
    unknown = sum("base_fooled" not in record for record in records)
    if unknown:
        print(
            f"note: {unknown} record(s) predate the successful-attack fields (clean_base_correct, base_fooled, "
            "adv_smoothed_prediction): their successful-attack columns read 'unknown' (empty in the CSVs)"
        )
    for path in [*files.tables, *files.charts]:
        print(f"wrote {path}")
    if files.note:
        print(f"note: {files.note}")
    return 0
