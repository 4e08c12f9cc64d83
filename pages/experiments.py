"""Experiments: certify a small balanced CIFAR-10 test subset with all three methods and draw the paper's charts.

Self-contained: it loads its own model, data and profile through ``dsmooth_core.experiments``, writes
the same JSON records as ``python -m dsmooth_core experiment run`` and draws the same figures as
``experiment analyse``. The model is the session's ``model_name`` (``model_pretrained`` false for
untrained weights), else the app's current model choice, else the bundled default.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import streamlit as st
import torch

from dsmooth_core import pick_device
from dsmooth_core.attacks import PRESETS
from dsmooth_core.data import DataUnavailableError, ImageSet, data_dir, load_cifar10
from dsmooth_core.experiments import (
    METHOD_NAMES,
    ExperimentSpec,
    RecordStore,
    attack_config,
    attack_table,
    evaluation_indices,
    group_records,
    load_experiment_model,
    prepare_profile,
    read_records,
    report_figures,
    run_experiment,
    time_table,
)
from dsmooth_core.models import DEFAULT_MODEL
from dsmooth_core.noise import METHODS
from dsmooth_lab_ui import jobs

APP_MODEL_KEY = "dsl_model"  # the app's ModelChoice (name, pretrained), used when "model_name" is absent
RECORDS_FILE = "records.jsonl"
JOB = "experiment"
DONE_NOTE = "exp_done_note"  # what the last finished run did
GPU = torch.cuda.is_available()


def current_model() -> tuple[str, bool]:
    """(name, pretrained) of the model this page certifies."""
    if "model_name" in st.session_state:
        return str(st.session_state["model_name"]), bool(st.session_state.get("model_pretrained", True))
    choice = st.session_state.get(APP_MODEL_KEY)
    if choice is not None and hasattr(choice, "name"):
        return str(choice.name), bool(getattr(choice, "pretrained", True))
    return DEFAULT_MODEL, True


@st.cache_resource(show_spinner="Loading the model ...", max_entries=2)
def load(name: str, pretrained: bool, device: str) -> torch.nn.Module:
    return load_experiment_model(name, device, pretrained=pretrained)


@st.cache_resource(show_spinner="Loading CIFAR-10 ...", max_entries=2)
def cifar10(split: str, root: str) -> ImageSet:
    return load_cifar10(split, Path(root), download=False)


def numbers(label: str, text: str, kind: type) -> tuple:
    """Comma-separated numbers of ``kind``; stops the page with a message when they do not parse."""
    try:
        values = tuple(dict.fromkeys(kind(part) for part in text.replace(" ", "").split(",") if part))
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        st.error(f"{label}: give one or more positive numbers separated by commas, got {text!r}.")
        st.stop()
    return values


def settings() -> tuple[ExperimentSpec, dict[str, Any]]:
    """The experiment's grid and the run's sizes, from the page's widgets."""
    methods = st.multiselect(
        "Methods",
        list(METHODS),
        default=list(METHODS),
        format_func=METHOD_NAMES.get,
        key="exp_methods",
        persist_state="session",
    )
    if not methods:
        st.error("Choose at least one method.")
        st.stop()
    c = st.columns(4)
    sigmas = c[0].text_input("sigma (one or more)", "0.25", key="exp_sigmas", persist_state="session")
    ks = c[1].text_input("DSmooth rank k (one or more)", "10", key="exp_ks", persist_state="session")
    ns = c[2].text_input("n, estimation draws (one or more)", "100", key="exp_ns", persist_state="session")
    alphas = c[3].text_input("alpha (one or more)", "0.001", key="exp_alphas", persist_state="session")
    c = st.columns(4)
    n0 = c[0].number_input("n0, selection draws", 1, value=20, key="exp_n0", persist_state="session")
    size = c[1].number_input("Test images (balanced)", 1, value=10, key="exp_size", persist_state="session")
    calibration = c[2].number_input(
        "Calibration images (train split)", 2, value=50, key="exp_calibration", persist_state="session"
    )
    seed = c[3].number_input("Seed", 0, value=0, key="exp_seed", persist_state="session")
    c = st.columns(4)
    preset = c[0].selectbox("Attack preset", sorted(PRESETS), key="exp_attack", persist_state="session")
    queries = c[1].number_input(
        "Square queries", 1, value=100, key="exp_queries", persist_state="session", help="per image"
    )
    batch = c[2].number_input("Batch size", 1, value=1000 if GPU else 200, key="exp_batch", persist_state="session")
    gamma = c[3].number_input(
        "gamma (lower bound)",
        0.0,
        0.5,
        value=0.01,
        format="%.3g",
        key="exp_gamma",
        persist_state="session",
        help="Dotted curves hold with probability 1 - gamma given each certificate's alpha; 0 hides them.",
    )
    folder = st.text_input("Records folder", "runs/experiments", key="exp_folder", persist_state="session")
    spec = ExperimentSpec(
        methods=tuple(methods),
        sigmas=numbers("sigma", sigmas, float),
        ks=numbers("k", ks, int),
        n0=int(n0),
        ns=numbers("n", ns, int),
        alphas=numbers("alpha", alphas, float),
        seed=int(seed),
        attack_name=preset,
        attack=attack_config(preset, int(queries)),
    )
    sizes = {
        "size": int(size),
        "calibration": int(calibration),
        "batch": int(batch),
        "gamma": float(gamma) or None,
        "folder": Path(folder),
    }
    return spec, sizes


def run(model, test: ImageSet, train: ImageSet, spec: ExperimentSpec, sizes: dict[str, Any], progress) -> str:
    """The experiment's work (a background job: library calls only); returns what it did."""
    folder: Path = sizes["folder"]
    indices = evaluation_indices(test.labels, sizes["size"], spec.seed)
    progress.stage("Calibration attack (cached after the first run)")
    profile = prepare_profile(
        model,
        train,
        size=sizes["calibration"],
        k=max(spec.ks),
        attack=spec.attack,
        cache_dir=folder / "profiles",
        seed=spec.seed,
        batch_size=sizes["batch"],
        progress=progress,
    )
    progress.stage("Attacking and certifying")
    summary = run_experiment(
        model,
        test,
        indices,
        profile,
        spec,
        RecordStore(folder / RECORDS_FILE),
        batch_size=sizes["batch"],
        progress=progress,
    )
    return (
        f"{summary.records_written} new records for {summary.images} images "
        f"({summary.images_skipped} were already done)."
    )


def command(model_name: str, pretrained: bool, spec: ExperimentSpec, sizes: dict[str, Any]) -> str:
    """The CLI line that runs this experiment (at full size, on a GPU, say)."""
    words = ["python", "-m", "dsmooth_core", "experiment", "run", "--model", model_name]
    words += [] if pretrained else ["--untrained"]
    words += ["--methods", *spec.methods, "--sigmas", *map(str, spec.sigmas), "--k", *map(str, spec.ks)]
    words += ["--n0", str(spec.n0), "--n", *map(str, spec.ns), "--alpha", *map(str, spec.alphas)]
    words += ["--seed", str(spec.seed), "--attack", spec.attack_name, "--attack-queries", str(spec.attack.n_queries)]
    words += ["--eval-size", str(sizes["size"]), "--calibration-size", str(sizes["calibration"])]
    words += ["--profile-dir", str(sizes["folder"] / "profiles"), "--records", str(sizes["folder"] / RECORDS_FILE)]
    return shlex.join(words)


def show(records: list[dict[str, Any]], gamma: float | None) -> None:
    groups = group_records(records)
    figures = report_figures(groups, gamma)
    st.subheader("Certified against the attack")
    st.caption(
        "The share of images where the method returns the true label AND the attack's actual perturbation "
        "lies inside its certified region, in the method's own metric: the one number that compares the "
        "three methods on the same threat."
    )
    st.plotly_chart(figures.pop("certified_against_attack"), key="exp_chart_certified_against_attack")
    st.dataframe(attack_table(groups, gamma), hide_index=True, key="exp_table_attack")
    st.subheader("Certified accuracy")
    st.caption(
        "The first chart is the paper's Fig. 1: each method in its own metric, so radii are not comparable "
        "across methods (DSmooth's Mahalanobis radius is not an l2 guarantee). The next two restate every "
        "certificate as the largest l2 and l1 balls it contains."
    )
    time_figure = figures.pop("time_per_image")
    for name, fig in figures.items():
        st.plotly_chart(fig, key=f"exp_chart_{name}")
    st.subheader("Time per image")
    st.plotly_chart(time_figure, key="exp_chart_time_per_image")
    st.dataframe(time_table(groups), hide_index=True, key="exp_table_time")
    st.download_button(
        "Download these records (JSON lines)",
        "".join(json.dumps(r) + "\n" for r in records),
        file_name="experiment-records.jsonl",
        key="exp_download",
        on_click="ignore",
    )


jobs.collect()  # also when the page runs alone, without app.py
st.title("Experiments")
st.caption(
    "Certify a class-balanced subset of the CIFAR-10 test split with DSmooth, RandSmooth and LSmooth. Every "
    "image is attacked once (Square + FGSM) and every method is judged against that same perturbation; "
    "DSmooth's covariance is fitted to the same attack on training images, so the calibration set never "
    "overlaps the test images. Records are saved one by one: stopping the run or leaving the page keeps "
    "them, and running again continues where it stopped."
)

model_name, pretrained = current_model()
try:
    model = load(model_name, pretrained, str(pick_device()))
except Exception as exc:  # the library's messages say what to do (missing weights, offline)
    st.error(f"The model {model_name} could not be loaded: {exc}")
    st.stop()
if model.info.dataset != "cifar10":
    st.info(f"Experiments run on CIFAR-10; {model_name} is a {model.info.dataset} model. Choose a CIFAR-10 model.")
    st.stop()
try:
    test_set, train_set = cifar10("test", str(data_dir())), cifar10("train", str(data_dir()))
except DataUnavailableError as exc:
    st.error(str(exc))
    st.stop()

st.markdown(f"**Model** `{model_name}`" + ("" if pretrained else " (untrained weights)"))
spec, sizes = settings()
if st.button("Run experiment", key="exp_run", type="primary"):
    jobs.start(
        JOB,
        "The experiment",
        (model.info.weights_hash, repr(spec), repr(sorted(sizes.items())), time.time()),  # records change on disk
        lambda progress: run(model, test_set, train_set, spec, sizes, progress),
        lambda message: st.session_state.__setitem__(DONE_NOTE, message),
        batch=sizes["batch"],
    )
if st.session_state.get(DONE_NOTE):
    st.success(st.session_state[DONE_NOTE])
with st.expander("The same experiment from the command line"):
    st.code(command(model_name, pretrained, spec, sizes), language="bash")
    st.caption("Add --shard i/N to split it across machines, then: python -m dsmooth_core experiment analyse ...")

try:
    chosen = set(evaluation_indices(test_set.labels, sizes["size"], spec.seed))
    saved = read_records(sizes["folder"] / RECORDS_FILE)
except ValueError as exc:
    st.error(str(exc))
    st.stop()
records = [r for r in saved if r["model_hash"] == model.info.weights_hash and r["idx"] in chosen and spec.selects(r)]
if records:
    show(records, sizes["gamma"])
else:
    st.info("No records for these settings yet: run the experiment.")
