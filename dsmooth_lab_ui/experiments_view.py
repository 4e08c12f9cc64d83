"""The Experiments page's views: the command line that reruns an experiment, and its records' charts and tables.

Why a module: the page gathers the experiment's settings and submits the run; these draw what the
library's analysis (``dsmooth_core.experiments``) makes of the records.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from dsmooth_core.cli.command_line import command_line
from dsmooth_core.experiments import (
    ExperimentSpec,
    Group,
    attack_table,
    group_records,
    paired_table,
    report_figures,
    successful_attack_table,
    time_table,
)
from dsmooth_lab_ui import state
from dsmooth_lab_ui.tasks import RECORDS_FILE


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


def successful_attacks(groups: list[Group]) -> None:
    """The attacks that fooled the base model: how many each method certifies, and what its smoothed
    classifier answers at the attacked images; then each two methods image by image."""
    st.subheader("Certified against a successful attack")
    st.caption(
        "Only the images whose attack fooled the base model (right on the clean image, wrong on the attacked "
        "one): the share each method certifies against that attack, and what its smoothed classifier (PREDICT) "
        "answers at the attacked image: right, fooled or abstains. Records of an earlier version count as "
        "unknown (outcome_unknown), never as no."
    )
    st.dataframe(successful_attack_table(groups), hide_index=True, key="exp_table_successful")
    paired = paired_table(groups)
    if paired:
        st.caption(
            "Each two methods on the same images: images both / only one / neither certify against a successful "
            "attack, the exact two-sided sign test on the images only one certifies, and Holm's adjustment over "
            "the rows of this table (p_holm)."
        )
        st.dataframe(paired, hide_index=True, key="exp_table_paired")


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
    successful_attacks(groups)
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
