"""``audit``: certify CIFAR-10 images, then attack each certificate; one TSV line per image and method, resumable.

Each line sets the certified radius (a lower bound on the robust radius) against the empirical
bound the attack found (an upper bound), both in the method's own metric. ``violation`` means a
perturbation inside the certified region changed PREDICT's answer: the certificate is refuted.
``consistent`` means the attack found nothing inside it, which never proves the certificate.
``inconclusive`` means the audit could not look (its PREDICT could name no class at --audit-n and
--audit-alpha); the printed line says what would let it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

from dsmooth_core.appendfile import check_writable_file
from dsmooth_core.audit import AuditSettings, audit
from dsmooth_core.certify import certification_checks, certify
from dsmooth_core.cli.certify_cmd import (
    add_selection_options,
    image_generator,
    profile_covariance,
    selected_indices,
)
from dsmooth_core.cli.result_files import forward_settings, model_settings, resumable_tsv, run_facts
from dsmooth_core.cli.threat_options import add_model_options, load_cifar_model
from dsmooth_core.data import ImageSet, load_cifar10
from dsmooth_core.device import model_device
from dsmooth_core.models import Normalized
from dsmooth_core.noise import METHODS, SmoothingNoise
from dsmooth_core.settings import CertifySettings

COLUMNS = (
    "idx",
    "label",
    "method",
    "metric",
    "predict",
    "radius",
    "p_lower",
    "verdict",
    "empirical_bound",
    "new_predict",
    "searched_up_to",
    "predict_calls",
    "time",
)
ABSTAINED = "abstained"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="certify CIFAR-10 test images, then search each certificate for a violation")
    add_model_options(p)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["randsmooth"])
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--profile", type=Path, help="threat profile (covariance file), needed by dsmooth")
    add_selection_options(p)
    p.add_argument("--n0", type=int, default=100, help="certify: selection draws")
    p.add_argument("--n", type=int, default=1000, help="certify: estimation draws")
    p.add_argument("--alpha", type=float, default=0.001, help="certify: failure rate")
    defaults = AuditSettings()
    p.add_argument("--audit-n", type=int, default=defaults.n, help="PREDICT draws per attack candidate")
    p.add_argument("--audit-alpha", type=float, default=defaults.alpha, help="the audit's family-wise failure rate")
    p.add_argument("--draws", type=int, default=defaults.draws, help="noise draws per PGD gradient")
    p.add_argument("--steps", type=int, default=defaults.steps, help="PGD steps per budget")
    p.add_argument("--growth-steps", type=int, default=defaults.growth_steps, help="budget doublings past R")
    p.add_argument("--bisection-steps", type=int, default=defaults.bisection_steps)
    p.add_argument("--batch", type=int, default=400)
    p.add_argument("--seed", type=int, default=0, help="image i uses generator seed (seed, i) for each method")
    p.add_argument("--out", type=Path, required=True, help="TSV file; existing (idx, method) lines are skipped")
    p.set_defaults(run=run)


# the audit's settings by the option that sets each (tolerance has none: it is the library default)
_AUDIT_FLAGS = {
    "n": "--audit-n",
    "alpha": "--audit-alpha",
    "draws": "--draws",
    "steps": "--steps",
    "growth_steps": "--growth-steps",
    "bisection_steps": "--bisection-steps",
    "tolerance": "tolerance",
    "batch_size": "--batch",
}


def run(args: argparse.Namespace) -> int:
    settings = AuditSettings(
        n=args.audit_n,
        alpha=args.audit_alpha,
        draws=args.draws,
        steps=args.steps,
        growth_steps=args.growth_steps,
        bisection_steps=args.bisection_steps,
        batch_size=args.batch,
    )
    methods = list(dict.fromkeys(args.methods))
    certifying = [CertifySettings(m, args.sigma, args.n0, args.n, args.alpha, args.batch, args.seed) for m in methods]
    reach = settings.reach()
    if not reach.able:
        print(f"note: every audit will be inconclusive: {reach.reason()}", file=sys.stderr)
    check_writable_file(args.out)
    model = load_cifar_model(args)
    data = load_cifar10(args.split, args.data_dir)
    indices = selected_indices(len(data.labels), args.start, args.skip, args.max)
    covariance = profile_covariance(args, model, indices) if "dsmooth" in methods else None
    noises = [(c, c.noise(covariance)) for c in certifying]
    shape = tuple(model.info.input_shape)
    # the method is a key column of every row (like idx), so a resume may add methods; all else must match
    tsv = {
        **{f"--{name}": value for name, value in certifying[0].identity().items() if name != "method"},
        **{_AUDIT_FLAGS[name]: value for name, value in dataclasses.asdict(settings).items()},
        "--split": args.split,
        "--profile": None if covariance is None else covariance.content_hash(),
        "model": model_settings(model.info),
        **forward_settings(model),
    }
    about = run_facts(model, args)
    with contextlib.ExitStack() as checks:
        for _, noise in noises:  # each model and noise checked once, not once per image
            checks.enter_context(certification_checks(model, noise, shape))
        with resumable_tsv(args.out, COLUMNS, ("idx", "method"), "audit", tsv, about) as (done, write):
            todo = [(i, c, noise) for i in indices for c, noise in noises if (str(i), noise.name) not in done]
            for count, (index, certifying_settings, noise) in enumerate(todo, 1):
                row, why = _audit_row(model, data, index, certifying_settings, noise, settings)
                write(row)
                print(
                    f"[{count}/{len(todo)}] idx {index} {row[2]}: radius {float(row[5]):.4f}, "
                    f"empirical bound {row[8]} ({row[3]}): {row[7]}{why}"
                )
    return 0


def _audit_row(
    model: Normalized, data: ImageSet, index: int, c: CertifySettings, noise: SmoothingNoise, settings: AuditSettings
) -> tuple[tuple, str]:
    """Certify image ``index`` and attack its certificate: one TSV row, and why an audit was inconclusive."""
    x, label = data.tensor([index])[0], int(data.labels[index])
    generator = image_generator(c.seed, index, model_device(model))
    cert = certify(model, x, noise, c.n0, c.n, c.alpha, c.batch, generator)
    if cert.abstained:
        verdict, bound, new, searched, calls, seconds = ABSTAINED, "nan", "", "nan", 0, cert.seconds
        why = ""
    else:
        result = audit(model, x, noise, cert, settings, generator)
        verdict, bound, searched = result.verdict, repr(result.empirical_bound), repr(result.searched_up_to)
        new = "" if result.new_prediction is None else result.new_prediction
        calls, seconds = result.predict_calls, cert.seconds + result.seconds
        why = f" ({result.reason})" if result.inconclusive else ""
    row = (
        index,
        label,
        cert.method_name,  # the display name, as in files written before
        cert.metric,
        cert.prediction,
        repr(cert.radius),
        repr(cert.p_lower),
        verdict,
        bound,
        new,
        searched,
        calls,
        f"{seconds:.4f}",
    )
    return row, why
