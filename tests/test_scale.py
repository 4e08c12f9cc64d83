"""The Ray engine: the same records as in-process and in shards, retried tasks, resumed drivers, bad addresses.

One local Ray instance with two CPUs serves the whole module; models and sample sizes are tiny.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

import pytest
import ray
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from dsmooth_core import Cancelled
from dsmooth_core.attacks import AttackConfig
from dsmooth_core.cli import main
from dsmooth_core.data import load_cifar10
from dsmooth_core.experiments import ExperimentSpec, RecordStore, evaluation_indices, read_records, run_experiment
from dsmooth_core.models import ModelInfo, Normalized, wrap
from dsmooth_core.models.user import ExportedNet
from dsmooth_core.profiles import Calibration, build_profile
from dsmooth_core.scale import ClusterUnavailableError, RayOptions, connect, run_experiment_on_ray
from dsmooth_core.scale.cluster import probe_address
from dsmooth_lab_ui import scheduler
from tests import apptest_jobs
from tests.fakedata import write_fake_cifar10

SHAPE = (3, 32, 32)
IMAGES = 5
SETTINGS = 3  # dsmooth k=3, randsmooth, lsmooth


@pytest.fixture(autouse=True)
def one_thread():
    """One thread, as each Ray task gets with one CPU (and faster on a shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cluster():
    """One local two-CPU Ray instance for every test of the module."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this file
    connect(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny linear CIFAR-shaped model, fake data, a profile, and the in-process records as reference."""
    root = write_fake_cifar10(tmp_path_factory.mktemp("data"), per_class=2)
    test, train = load_cifar10("test", root), load_cifar10("train", root)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(10, 3072, generator=torch.Generator().manual_seed(0)) * 0.05)
        net[1].bias.zero_()
    model = wrap(net, ModelInfo("tiny", "cifar10", SHAPE, tuple(test.classes), "test"))
    attack = AttackConfig(eps_inf=0.1, n_queries=10)
    calibration = list(range(0, 20, 2))
    profile = build_profile(
        model,
        train.tensor(calibration),
        torch.from_numpy(train.labels[calibration]),
        Calibration(size=len(calibration), attack=attack, k=3, keep="nonzero"),
        indices=calibration,
    )
    spec = ExperimentSpec(sigmas=(0.25,), ks=(3,), n0=5, ns=(20,), attack_name="tiny", attack=attack)
    setup = {"model": model, "test": test, "profile": profile, "spec": spec, "data": root}
    setup["indices"] = evaluation_indices(test.labels, IMAGES, seed=0)
    reference = tmp_path_factory.mktemp("reference") / "local.jsonl"
    run_experiment(model, test, setup["indices"], profile, spec, RecordStore(reference), batch_size=8)
    setup["reference"] = read_records(reference)
    assert len(setup["reference"]) == IMAGES * SETTINGS
    return setup


def _on_ray(setup, path: Path, indices=None, model=None, chunk_size: int = 2, **kwargs):
    return run_experiment_on_ray(
        model or setup["model"],
        setup["test"],
        setup["indices"] if indices is None else indices,
        setup["profile"],
        setup["spec"],
        RecordStore(path),
        options=RayOptions(chunk_size=chunk_size),
        batch_size=8,
        **kwargs,
    )


def _results(records: list[dict]) -> list[dict]:
    """Records without the wall-clock time, in key order, for exact comparisons."""
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in records), key=lambda r: r["key"])


def _exactly_once(records: list[dict]) -> bool:
    return len({r["key"] for r in records}) == len(records)


def test_records_on_ray_and_in_ray_shards_equal_the_in_process_ones(cluster, setup, tmp_path):
    summary = _on_ray(setup, tmp_path / "ray.jsonl")
    assert (summary.images, summary.records_written) == (IMAGES, IMAGES * SETTINGS)
    assert _results(read_records(tmp_path / "ray.jsonl")) == _results(setup["reference"])
    again = _on_ray(setup, tmp_path / "ray.jsonl")  # everything is there: nothing is sent to Ray
    assert (again.records_written, again.images_skipped) == (0, IMAGES)
    shards = [evaluation_indices(setup["test"].labels, IMAGES, seed=0, shard=(i, 2)) for i in range(2)]
    for indices in shards:
        _on_ray(setup, tmp_path / "shards.jsonl", indices=indices, chunk_size=1)
    assert _results(read_records(tmp_path / "shards.jsonl")) == _results(setup["reference"])


class CrashOnce(nn.Module):
    """``net``, except that the worker process running its ``crash_at``-th forward pass dies, once."""

    def __init__(self, net: nn.Module, marker: Path, crash_at: int) -> None:
        super().__init__()
        self.net, self.marker, self.crash_at, self.calls = net, marker, crash_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.crash_at and not self.marker.exists():
            self.marker.touch()
            os._exit(1)  # as a killed process: no exception, no cleanup
        return self.net(x)


def test_a_worker_killed_mid_task_is_retried_and_every_record_is_written_once(cluster, setup, tmp_path):
    marker = tmp_path / "crashed"
    model = setup["model"]
    crashing = Normalized(CrashOnce(model.net, marker, crash_at=30), model.info)  # same name and hash
    summary = _on_ray(setup, tmp_path / "r.jsonl", model=crashing)
    assert marker.exists(), "no worker died: the test did not test a retry"
    records = read_records(tmp_path / "r.jsonl")
    assert summary.records_written == len(records) == IMAGES * SETTINGS and _exactly_once(records)
    assert _results(records) == _results(setup["reference"])


def test_an_interrupted_driver_resumes_from_the_records_written(cluster, setup, tmp_path):
    path = tmp_path / "r.jsonl"
    seen = []
    with pytest.raises(Cancelled):  # stop once the first chunk of images is written
        _on_ray(setup, path, progress=lambda done, total: seen.append((done, total)) or done >= 2)
    written = read_records(path)
    assert 0 < len(written) < IMAGES * SETTINGS and seen[0] == (0, IMAGES)
    resumed = _on_ray(setup, path)
    records = read_records(path)
    assert resumed.records_written == IMAGES * SETTINGS - len(written)
    assert len(records) == IMAGES * SETTINGS and _exactly_once(records)
    assert _results(records) == _results(setup["reference"])


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_a_bad_address_fails_within_seconds_and_keeps_the_cluster_joined(cluster, address):
    started = time.perf_counter()
    with pytest.raises(ClusterUnavailableError, match="no Ray cluster answers at"):
        connect(address, timeout=2)
    assert time.perf_counter() - started < 10
    assert ray.is_initialized()


def test_the_cli_engines_write_the_same_rows_and_records(cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=2)))
    certify_args = ["certify", "--model", "cifar10_resnet20", "--untrained", "--n0", "5", "--n", "20"]
    certify_args += ["--batch", "10", "--skip", "5", "--device", "cpu"]
    rows = {}
    for engine in ("local", "ray"):
        torch.manual_seed(0)  # certify's untrained weights come from the global RNG
        assert main([*certify_args, "--engine", engine, "--chunk-size", "2", "--out", str(tmp_path / engine)]) == 0
        with (tmp_path / engine).open(newline="") as f:
            rows[engine] = sorted(
                ({k: v for k, v in r.items() if k != "time"} for r in csv.DictReader(f, delimiter="\t")),
                key=lambda r: int(r["idx"]),
            )
    assert len(rows["local"]) == 4 and rows["ray"] == rows["local"]

    experiment_args = ["experiment", "run", "--model", "cifar10_resnet20", "--untrained", "--eval-size", "2"]
    experiment_args += ["--calibration-size", "10", "--n0", "5", "--n", "20", "--k", "3", "--attack-queries", "5"]
    experiment_args += ["--batch", "25", "--device", "cpu", "--profile-dir", str(tmp_path / "profiles")]
    for engine in ("local", "ray"):
        assert main([*experiment_args, "--engine", engine, "--records", str(tmp_path / f"{engine}.jsonl")]) == 0
    local, on_ray = (read_records(tmp_path / f"{engine}.jsonl") for engine in ("local", "ray"))
    assert len(local) == 2 * 3 and _results(on_ray) == _results(local)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main([*experiment_args, "--address", "auto", "--records", str(tmp_path / "x.jsonl")])
    assert stopped.value.code == 2 and "--address needs --engine ray" in capsys.readouterr().err


def test_the_experiments_page_hands_its_run_to_a_ray_cluster(cluster, tmp_path, monkeypatch):
    # a worker started before this module's Ray instance lacks the instance's token (environment is read at
    # spawn): the run must go to a worker started now, as an app started after its cluster would have
    scheduler.MANAGER.workers.close()
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=2)))
    page = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "experiments.py"), default_timeout=120)
    page.session_state["model_name"] = "cifar10_resnet20"
    page.session_state["model_pretrained"] = False
    page.run()
    values = {"exp_sigmas": "0.25", "exp_ks": "3", "exp_ns": "20", "exp_alphas": "0.001", "exp_folder": str(tmp_path)}
    for key, value in values.items():
        page.text_input(key=key).set_value(value)
    numbers = {"exp_n0": 5, "exp_size": 2, "exp_calibration": 10, "exp_queries": 5, "exp_batch": 25}
    for key, value in numbers.items():
        page.number_input(key=key).set_value(value)

    page.text_input(key="exp_ray_address").set_value("127.0.0.1:1")
    assert apptest_jobs.run_experiment(page).state == scheduler.FAILED
    assert any("no Ray cluster answers at 127.0.0.1:1" in e.value for e in page.error), [e.value for e in page.error]
    assert not (tmp_path / "records.jsonl").exists()

    page.text_input(key="exp_ray_address").set_value(ray.get_runtime_context().gcs_address)  # the shared instance
    assert apptest_jobs.run_experiment(page).state == scheduler.DONE
    assert not page.exception and not page.error, [e.value for e in [*page.exception, *page.error]]
    assert any("6 new records for 2 images" in s.value for s in page.success)
    assert len(read_records(tmp_path / "records.jsonl")) == 6
    assert "--engine ray --address" in page.code[0].value


def test_a_ray_head_speaks_the_protocol_the_address_probe_expects(cluster):
    probe_address(ray.get_runtime_context().gcs_address, timeout=2)  # an HTTP server fails it (test_bad_inputs_probe2)


@pytest.mark.parametrize("options", [RayOptions(cpus_per_task=64), RayOptions(gpus_per_task=1)])
def test_task_resources_no_node_has_are_refused_before_any_task_waits(cluster, setup, tmp_path, options):
    started = time.perf_counter()
    with pytest.raises(ClusterUnavailableError, match="no node of the Ray cluster can run a task"):
        run_experiment_on_ray(
            setup["model"], setup["test"], setup["indices"], setup["profile"], setup["spec"],
            RecordStore(tmp_path / "r.jsonl"), options=options, batch_size=8,
        )  # fmt: skip
    assert time.perf_counter() - started < 30 and not read_records(tmp_path / "r.jsonl")


def test_a_torchscript_model_runs_on_ray_with_the_records_of_its_python_twin(cluster, setup, tmp_path):
    model = setup["model"]
    scripted = wrap(torch.jit.script(model.net), model.info)  # same weights and info, code as TorchScript
    summary = _on_ray(setup, tmp_path / "script.jsonl", model=scripted)
    assert summary.records_written == IMAGES * SETTINGS
    assert _results(read_records(tmp_path / "script.jsonl")) == _results(setup["reference"])


def test_the_cli_refuses_task_resources_no_node_has_before_writing_anything(cluster, tmp_path, capsys):
    args = ["certify", "--model", "cifar10_resnet20", "--untrained", "--engine", "ray", "--gpus-per-task", "1"]
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--address", ray.get_runtime_context().gcs_address, "--out", str(tmp_path / "c.tsv")])
    assert stopped.value.code == 2 and "--gpus-per-task 1: its 1 node(s) hold 2 CPUs" in capsys.readouterr().err
    assert not (tmp_path / "c.tsv").exists()


def test_a_torch_export_model_is_refused_on_ray_with_one_line(cluster, setup, tmp_path):
    model = setup["model"]
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model.net, (torch.rand(2, *SHAPE),), dynamic_shapes=({0: batch},))
    exported = wrap(ExportedNet(program), model.info)
    with pytest.raises(ValueError, match=r"the model cannot be sent to Ray workers \(.*\); a torch.export"):
        _on_ray(setup, tmp_path / "export.jsonl", model=exported)
    assert not read_records(tmp_path / "export.jsonl")
