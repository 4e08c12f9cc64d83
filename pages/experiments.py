"""Experiments: certify a small balanced CIFAR-10 test subset with all three methods and draw the paper's charts.

It certifies with the app's current model (sidebar / Model & image page), loaded, like the data, through
the app's shared caches, and runs as an app job (progress bars and Cancel). It writes the same JSON records as
``python -m dsmooth_core experiment run`` and draws the same figures as ``experiment analyse``; the command
line it shows is written from that CLI's parser.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import streamlit as st
import torch

from dsmooth_core.attacks import PRESETS
from dsmooth_core.cli.command_line import command_line
from dsmooth_core.data import data_dir
from dsmooth_core.experiments import (
    ExperimentSpec,
    RunSummary,
    attack_config,
    attack_table,
    evaluation_indices,
    group_records,
    read_records,
    report_figures,
    time_table,
)
from dsmooth_core.noise import METHODS, method_class
from dsmooth_core.scale import RayOptions
from dsmooth_lab_ui import jobs, nav, resources, state, tasks
from dsmooth_lab_ui.tasks import RECORDS_FILE

JOB = "experiment"
DONE_NOTE = "exp_done_note"  # what the last finished run did
ERROR_NOTE = "exp_error_note"  # why the last run failed (e.g. no Ray cluster at the address)
GPU = torch.cuda.is_available()


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
        format_func=lambda key: method_class(key).name,
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
    c = st.columns([3, 1])
    address = c[0].text_input(
        "Ray cluster address (optional)",
        "",
        key="exp_ray_address",
        persist_state="session",
        help="Empty: certify in this process. auto (a cluster `ray start` runs on this machine), host:port or "
        "ray://host:port: hand the images to that Ray cluster; its nodes need the project installed.",
    )
    gpus = c[1].number_input(
        "GPUs per Ray task", 0.0, value=0.0, key="exp_ray_gpus", persist_state="session", disabled=not address
    )
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
        "ray": RayOptions(address=address.strip(), gpus_per_task=float(gpus)) if address.strip() else None,
    }
    return spec, sizes


def command(choice: state.ModelChoice, spec: ExperimentSpec, sizes: dict[str, Any]) -> str:
    """The CLI line that runs this experiment (at full size, on a GPU, say)."""
    values = {
        "model": choice.name,
        "untrained": not choice.pretrained,
        "methods": spec.methods,
        "sigmas": spec.sigmas,
        "k": spec.ks,
        "n0": spec.n0,
        "n": spec.ns,
        "alpha": spec.alphas,
        "seed": spec.seed,
        "attack": spec.attack_name,
        "attack_queries": spec.attack.n_queries,
        "eval_size": sizes["size"],
        "calibration_size": sizes["calibration"],
        "profile_dir": sizes["folder"] / "profiles",
        "records": sizes["folder"] / RECORDS_FILE,
    }
    if sizes["ray"] is not None:
        values |= {"engine": "ray", "address": sizes["ray"].address, "gpus_per_task": sizes["ray"].gpus_per_task}
    return command_line(("experiment", "run"), values)


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


nav.ensure_app()
jobs.collect()  # also when the page runs alone, without app.py (app.py delivers a job only once)
st.title("Experiments")
st.caption(
    "Certify a class-balanced subset of the CIFAR-10 test split with DSmooth, RandSmooth and LSmooth. Every "
    "image is attacked once (Square + FGSM) and every method is judged against that same perturbation; "
    "DSmooth's covariance is fitted to the same attack on training images, so the calibration set never "
    "overlaps the test images. Records are saved one by one: cancelling the run or leaving the page keeps "
    "them, and running again continues where it stopped."
)
choice: state.ModelChoice = state.get(state.MODEL)
model = resources.current_model()
if model is None:
    nav.need(f"The model could not be loaded: {state.get(state.MODEL_ERROR)}", nav.MODEL_IMAGE, "Choose a model")
    st.stop()
if model.info.dataset != "cifar10":
    st.info(f"Experiments run on CIFAR-10; {choice.name} is a {model.info.dataset} model. Choose a CIFAR-10 model.")
    nav.link(nav.MODEL_IMAGE, "Choose a model")
    st.stop()
(test_set, test_error), (train_set, train_error) = resources.cifar10("test"), resources.cifar10("train")
if test_set is None or train_set is None:
    st.error(test_error or train_error)
    st.stop()

st.markdown(f"**Model** `{choice.name}`" + ("" if choice.pretrained else " (untrained weights)"))
spec, sizes = settings()
if st.button("Run experiment", key="exp_run", type="primary"):

    def deliver(summary: RunSummary) -> None:
        st.session_state[DONE_NOTE] = (
            f"{summary.records_written} new records for {summary.images} images "
            f"({summary.images_skipped} were already done)."
        )

    def failed(message: str) -> None:
        st.session_state[ERROR_NOTE] = message

    st.session_state.pop(DONE_NOTE, None)
    st.session_state.pop(ERROR_NOTE, None)
    stamps = resources.cifar10_stamp("test"), resources.cifar10_stamp("train")
    data = tasks.Cifar10Folder(str(data_dir()), *stamps)
    jobs.start(
        JOB,
        "The experiment",
        (resources.model_key(model), repr(spec), repr(sorted(sizes.items()))),
        functools.partial(tasks.experiment, model, data, spec, sizes),
        deliver,
        batch=sizes["batch"],
        on_error=failed,
        kept="The records finished before it stopped are saved; run it again to continue from them.",
        cache=False,  # its records on disk change between runs: a rerun must look at them again
    )
if st.session_state.get(DONE_NOTE):
    st.success(st.session_state[DONE_NOTE])
if st.session_state.get(ERROR_NOTE):
    st.error(st.session_state[ERROR_NOTE])
with st.expander("The same experiment from the command line"):
    if choice.upload is None:
        st.code(command(choice, spec, sizes), language="bash")
        st.caption("Add --shard i/N to split it across machines, then: python -m dsmooth_core experiment analyse ...")
    else:  # the page does not know the file's path or every option stated at upload
        st.info(
            f"{choice.name} was uploaded in the browser. On the command line pass the file with --model-file "
            "(and --trust-code for a TorchScript or .pt2 program) with the input size, classes and normalization "
            "stated at upload; `python -m dsmooth_core experiment run --help` lists them.",
            icon=":material/info:",
        )

try:
    chosen = set(evaluation_indices(test_set.labels, sizes["size"], spec.seed))
    saved = read_records(sizes["folder"] / RECORDS_FILE)
except ValueError as exc:
    st.error(str(exc))
    st.stop()
identity = model.info.identity  # records of the same weights with another normalization are another model's
records = [r for r in saved if r.get("model_identity") == identity and r["idx"] in chosen and spec.selects(r)]
if records:
    show(records, sizes["gamma"])
else:
    st.info("No records for these settings yet: run the experiment.")
