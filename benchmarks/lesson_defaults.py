"""Measure candidate images for the guided lesson and pick its defaults (``dsmooth_lab_ui/lesson_defaults.py``).

Why: the lesson is where a newcomer learns what the lab is for, so its first comparison must show
the methods differing. The default gallery image certifies at the radius ceiling for all three
methods, which teaches nothing. This script runs the bundled model, the "reachable" attack and
DCERT for the three methods with the lesson's own settings (the same seeds and batch size the
lesson's jobs use) on the offline sample gallery and, when ``DSMOOTH_DATA_DIR`` holds CIFAR-10, on
every 200th CIFAR-10 test image (all classes), and writes every row and the pick to
``benchmarks/lesson_defaults.json``.

A candidate qualifies when the base model gets it right (or, for an unlabelled sample, the
label is the base model's own prediction), the attack fools the base model, every method certifies
that label, no radius sits at its ceiling, and the three radii differ: each pair by at least 3 % of
their ceilings (radius / ceiling, the share of what n draws can certify, so that the metrics' scales
do not count). Among those, the pick is the first one where the attack lies inside at least one
method's region and outside another's; without such a case, the first qualifying one.
When no candidate of a source qualifies (the five gallery samples), the pick is the first one that
qualifies with "every method certifies one same class" in place of "certifies that label".

Run: ``DSMOOTH_DATA_DIR=/work/shared/data python benchmarks/lesson_defaults.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from PIL import Image

from dsmooth_core import certify, compare
from dsmooth_core.attacks import PRESETS, square_then_fgsm
from dsmooth_core.data import DataUnavailableError, load_cifar10
from dsmooth_core.device import generator_for
from dsmooth_core.experiments import load_experiment_model
from dsmooth_core.models import DEFAULT_MODEL, prepare_image
from dsmooth_core.noise import METHODS, make_noise, method_class
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.settings import ProfileShape
from dsmooth_lab_ui import gallery, lesson_defaults

OUTPUT = Path(__file__).resolve().parent / "lesson_defaults.json"
MOST_OF_CEILING = 0.999  # a radius at this share of its ceiling is the ceiling (all n votes agreed)
LEAST_GAP = 0.03  # two radii closer than this share of their ceilings look the same to a newcomer


def measure(model, covariance, x: torch.Tensor, label: int | None, s: lesson_defaults.LessonSettings) -> dict:
    """One candidate with the lesson's settings: base prediction, attack, the three certificates."""
    with torch.inference_mode():
        probabilities = torch.softmax(model(x.unsqueeze(0)), dim=1)[0]
    prediction = int(probabilities.argmax())
    target = prediction if label is None else label
    attack = square_then_fgsm(
        model,
        x.unsqueeze(0),
        torch.tensor([target]),
        PRESETS[s.attack_preset],
        generator=generator_for(model, s.attack_seed),
    )
    row: dict = {
        "base prediction": model.info.class_names[prediction],
        "base probability": round(float(probabilities[prediction]), 3),
        "label": model.info.class_names[target] + ("" if label is not None else " (the base's own prediction)"),
        "base correct": prediction == target,
        "attack fools": bool(attack.success[0]),
        "attack l2": round(float(attack.l2[0]), 4),
    }
    delta = attack.perturbation[0]
    for method in METHODS:
        noise = make_noise(method, s.sigma, covariance)
        cert = certify(model, x, noise, s.n0, s.n, s.alpha, s.batch, generator_for(model, s.seed))
        c = compare(cert, noise, delta, label=target)
        name = noise.name
        row[f"{name} prediction"] = "ABSTAIN" if cert.abstained else model.info.class_names[cert.prediction]
        row[f"{name} R ({noise.metric_label})"] = round(cert.radius, 4)
        row[f"{name} ceiling"] = round(cert.radius_ceiling, 4)
        row[f"{name} attack distance"] = round(float(c.distance), 4)
        row[f"{name} attack inside"] = bool(c.inside)
        row[f"{name} certifies label"] = bool(not cert.abstained and cert.prediction == target)
    return row


def qualifies(row: dict, same_class_will_do: bool = False) -> bool:
    """The rule of the module's docstring; ``same_class_will_do`` is its fallback."""
    names = [method_class(m).name for m in METHODS]
    if not (row["base correct"] and row["attack fools"]):
        return False
    predictions = {row[f"{n} prediction"] for n in names}
    if same_class_will_do:
        if len(predictions) != 1 or "ABSTAIN" in predictions:
            return False
    elif not all(row[f"{n} certifies label"] for n in names):
        return False
    shares = [row[_radius_key(row, n)] / row[f"{n} ceiling"] for n in names]
    return max(shares) < MOST_OF_CEILING and min_gap(shares) >= LEAST_GAP


def min_gap(shares: list[float]) -> float:
    """The smallest difference between two of the shares."""
    return min(abs(a - b) for i, a in enumerate(shares) for b in shares[i + 1 :])


def separates(row: dict) -> bool:
    inside = [v for k, v in row.items() if k.endswith("attack inside")]
    return any(inside) and not all(inside)


def _radius_key(row: dict, name: str) -> str:
    return next(k for k in row if k.startswith(f"{name} R ("))


def pick(rows: list[dict]) -> dict | None:
    good = [r for r in rows if r["qualifies"]]
    if not good:
        return next((r for r in rows if r["qualifies with one same certified class"]), None)
    return next((r for r in good if r["attack separates the methods"]), good[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar-images", type=int, default=50, help="how many CIFAR-10 test images")
    parser.add_argument("--stride", type=int, default=200, help="every stride-th test image from index 0 (all classes)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    s = lesson_defaults.SETTINGS
    model = load_experiment_model(DEFAULT_MODEL, "cpu")
    profile = ThreatProfile.load(lesson_defaults.PROFILE_FILE)
    covariance = ProfileShape.of(profile.covariance).apply(profile.covariance)
    candidates: list[tuple[str, str, torch.Tensor, int | None]] = []
    for sample in gallery.samples():
        choice = gallery.choice(sample)
        x = prepare_image(Image.fromarray(choice.pixels), model.info)
        candidates.append(("gallery", sample.file, x, choice.label))
    try:
        test = load_cifar10("test", download=False)
    except DataUnavailableError as exc:
        print(f"no CIFAR-10 ({exc}): the gallery only")
        test = None
    if test is not None:
        for index in range(0, min(args.cifar_images * args.stride, len(test.labels)), args.stride):
            x = prepare_image(Image.fromarray(test.images[index]), model.info)
            candidates.append(("cifar10-test", str(index), x, int(test.labels[index])))
    rows = []
    for source, name, x, label in candidates:
        start = time.perf_counter()
        row = {"source": source, "image": name, **measure(model, covariance, x, label, s)}
        row["qualifies"] = qualifies(row)
        row["qualifies with one same certified class"] = qualifies(row, same_class_will_do=True)
        row["attack separates the methods"] = separates(row)
        row["seconds"] = round(time.perf_counter() - start, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    picks = {source: pick([r for r in rows if r["source"] == source]) for source in ("gallery", "cifar10-test")}
    payload = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"python benchmarks/lesson_defaults.py --cifar-images {args.cifar_images} --stride {args.stride}",
        "data dir": os.environ.get("DSMOOTH_DATA_DIR"),
        "model": model.info.name,
        "model identity": model.info.identity,
        "profile": str(lesson_defaults.PROFILE_FILE.name),
        "settings": s._asdict(),
        "rule": " ".join(__doc__.split("\n\n")[2].split()),
        "picks": {k: (None if v is None else f"{v['source']}:{v['image']}") for k, v in picks.items()},
        # step 1's example of a mistake: the first CIFAR-10 image the base model gets wrong
        "mistake": next(
            (f"{r['source']}:{r['image']}" for r in rows if r["source"] != "gallery" and not r["base correct"]), None
        ),
        "rows": rows,
    }
    args.output.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"picks: {payload['picks']}; written to {args.output}")


if __name__ == "__main__":
    main()
