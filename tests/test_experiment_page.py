"""The Experiments page under AppTest: a tiny experiment runs with progress, writes records, draws the charts."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from dsmooth_core.cli import build_parser
from dsmooth_core.experiments import read_records
from dsmooth_lab_ui import jobs, scheduler, state
from tests import apptest_jobs
from tests.fakedata import write_fake_cifar10

PAGE = Path(__file__).resolve().parents[1] / "pages" / "experiments.py"


@pytest.fixture
def page(tmp_path, monkeypatch) -> AppTest:
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=2)))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # several times faster than two threads on a CPU shared with other work
    at = AppTest.from_file(str(PAGE), default_timeout=120)
    at.session_state[state.MODEL] = state.ModelChoice("cifar10_resnet20", pretrained=False)
    yield at
    torch.set_num_threads(before)


def _set(at: AppTest, folder: Path) -> None:
    values = {"exp_sigmas": "0.25", "exp_ks": "3", "exp_ns": "20", "exp_alphas": "0.001", "exp_folder": str(folder)}
    for key, value in values.items():
        at.text_input(key=key).set_value(value)
    numbers = {"exp_n0": 5, "exp_size": 4, "exp_calibration": 10, "exp_queries": 10, "exp_batch": 25}
    for key, value in numbers.items():
        at.number_input(key=key).set_value(value)


@pytest.mark.slow
def test_page_runs_a_small_experiment_and_draws_its_charts(page, tmp_path):
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    assert any("No records" in info.value for info in page.info)
    _set(page, tmp_path / "runs")
    job = apptest_jobs.run_experiment(page)
    assert job.worker_pid not in (None, os.getpid())  # submitted like every job: it ran in the worker
    assert not page.exception, [e.value for e in page.exception]
    assert not page.error, [e.value for e in page.error]
    assert any("12 new records for 4 images" in s.value for s in page.success)
    assert len(read_records(tmp_path / "runs" / "records.jsonl")) == 12
    charts = {element.proto.id for element in page.get("plotly_chart")}
    for name in ("certified_against_attack", "certified_accuracy", "certified_accuracy_l2", "time_per_image"):
        assert any(element_id.endswith(f"exp_chart_{name}") for element_id in charts), (name, charts)
    tables = [element.value for element in page.dataframe]
    (successful,) = [t for t in tables if "certified_against_successful_attack_share" in t.columns]
    (paired,) = [t for t in tables if "p_holm" in t.columns]
    records = read_records(tmp_path / "runs" / "records.jsonl")
    fooled = {r["idx"] for r in records if r["base_fooled"]}  # the attack does not depend on the method
    assert list(successful["successful_attacks"]) == [len(fooled)] * 3 and len(paired) == 3
    line = page.code[0].value
    assert "--untrained" in line and "--n 20" in line
    args = build_parser().parse_args(shlex.split(line)[3:])  # the CLI accepts the line as the page shows it
    assert (args.model, args.untrained, args.sigmas, args.k) == ("cifar10_resnet20", True, [0.25], [3])
    assert (args.n, args.n0) == ([20], 5)
    assert (args.eval_size, args.calibration_size, args.attack_queries) == (4, 10, 10)
    assert args.records == tmp_path / "runs" / "records.jsonl"

    apptest_jobs.run_experiment(page)  # everything is done: nothing new is certified
    assert any("0 new records for 4 images (4 were already done)" in s.value for s in page.success)


@pytest.mark.slow
def test_cancel_stops_the_run_and_keeps_the_finished_records(page, tmp_path, monkeypatch):
    """Cancel (its on_click sets the job's cancel flag) stops the run at the next progress report."""
    original = scheduler.Progress.__call__

    def cancel_after_the_first_image(self, done: int, total: int) -> bool:
        if self.job.step == "Attacking and certifying" and done >= total // 4:
            self.job.cancel.set()  # what the job panel's Cancel button does (jobs.request_cancel)
        return original(self, done, total)

    monkeypatch.setattr(scheduler.Progress, "__call__", cancel_after_the_first_image)
    page.run()
    _set(page, tmp_path / "runs")
    # the worker reports progress at most every 0.25 s: 200 Square queries an image (batch-1 forwards) keep
    # the run going for seconds after the first image, so the cancel arrives before the last one (with 10
    # queries a warm worker finished all four within one report and the job ended done)
    page.number_input(key="exp_queries").set_value(200)
    job = apptest_jobs.run_experiment(page)
    assert not page.exception, [e.value for e in page.exception]
    assert job.state == scheduler.CANCELLED
    said = jobs.describe(job)  # the job panel's line
    assert (
        said.startswith("Cancelled: The experiment stopped") and "records finished before it stopped are saved" in said
    )
    assert not page.success
    kept = read_records(tmp_path / "runs" / "records.jsonl")
    assert 0 < len(kept) < 12  # finished records stay; a rerun continues from them
    monkeypatch.setattr(scheduler.Progress, "__call__", original)
    apptest_jobs.run_experiment(page)
    assert any(f"{12 - len(kept)} new records for 4 images" in s.value for s in page.success)
