"""The certify command: Cohen's TSV columns, one line per image, resumable."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from dsmooth_core import LowRankCovariance
from dsmooth_core.cli import main
from dsmooth_core.cli.result_files import resumable_tsv, settings_path
from tests.fakedata import write_fake_cifar10


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = write_fake_cifar10(tmp_path / "data", per_class=2)
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(root))
    return root


ARGS = [
    "certify",
    "--model",
    "cifar10_resnet20",
    "--untrained",
    "--n0",
    "5",
    "--n",
    "20",
    "--batch",
    "10",
    "--skip",
    "5",
    "--device",
    "cpu",
]


def _run(argv):
    torch.manual_seed(0)  # untrained weights come from the global RNG: the same model every call
    return main(argv)


def test_writes_cohen_columns_and_resumes(data_dir, tmp_path):
    out = tmp_path / "cert.tsv"
    assert _run([*ARGS, "--out", str(out), "--max", "2"]) == 0
    first = _rows(out)
    assert list(first[0]) == ["idx", "label", "predict", "radius", "correct", "time", "method", "metric", "p_lower"]
    assert [r["idx"] for r in first] == ["0", "5"] and {r["metric"] for r in first} == {"l2"}
    assert _run([*ARGS, "--out", str(out)]) == 0  # resumes: only the missing images are added
    rows = _rows(out)
    assert [r["idx"] for r in rows] == ["0", "5", "10", "15"]
    assert rows[:2] == first
    fresh = tmp_path / "fresh.tsv"
    _run([*ARGS, "--out", str(fresh)])
    assert [(r["idx"], r["predict"], r["radius"]) for r in _rows(fresh)] == [
        (r["idx"], r["predict"], r["radius"]) for r in rows
    ]


def test_dsmooth_needs_and_uses_a_profile(data_dir, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main([*ARGS, "--method", "dsmooth", "--out", str(tmp_path / "x.tsv")])
    assert exit_info.value.code == 2
    cov = LowRankCovariance.fit(torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(0)), k=3)
    cov.save(tmp_path / "cov.pt")
    out = tmp_path / "d.tsv"
    main([*ARGS, "--method", "dsmooth", "--profile", str(tmp_path / "cov.pt"), "--max", "1", "--out", str(out)])
    assert _rows(out)[0]["metric"] == "mahalanobis" and _rows(out)[0]["method"] == "DSmooth"


def test_a_resumable_tsv_writes_its_header_with_the_first_row_and_leaves_nothing_on_failure(tmp_path):
    path, columns = tmp_path / "rows.tsv", ("idx", "method", "value")
    with pytest.raises(RuntimeError), resumable_tsv(path, columns, ("idx", "method"), "test") as (done, write):
        assert done == set()
        raise RuntimeError("refused before the first row")
    assert not path.exists()  # no header-only file behind a refusal
    with resumable_tsv(path, columns, ("idx", "method"), "test") as (done, write):
        write((3, "RandSmooth", 0.5))
    with pytest.raises(RuntimeError), resumable_tsv(path, columns, ("idx", "method"), "test") as (done, write):
        assert done == {("3", "RandSmooth")}
        raise RuntimeError("a later failure keeps the rows already written")
    assert path.read_text() == "idx\tmethod\tvalue\n3\tRandSmooth\t0.5\n"


def _refusal(argv, capsys) -> str:
    """The one-line message of a command refused with exit code 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        _run(argv)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]  # after any notes
    assert message.startswith("error: ")
    return message


def _snapshot(out):
    side = settings_path(out)
    return out.read_bytes(), side.read_bytes() if side.exists() else None


def test_the_settings_file_records_what_shaped_the_rows(data_dir, tmp_path):
    out = tmp_path / "cert.tsv"
    assert _run([*ARGS, "--sigma", "0.5", "--seed", "3", "--out", str(out), "--max", "1"]) == 0
    stored = json.loads(settings_path(out).read_text())
    settings = stored["settings"]
    assert stored["kind"] == "certify"
    assert {k: settings[k] for k in ("--method", "--sigma", "--n0", "--n", "--alpha", "--batch", "--seed")} == {
        "--method": "randsmooth",
        "--sigma": 0.5,
        "--n0": 5,
        "--n": 20,
        "--alpha": 0.001,
        "--batch": 10,
        "--seed": 3,
    }
    assert settings["--split"] == "test" and settings["--profile"] is None
    assert len(settings["model"]["identity"]) == 64
    pandas = pytest.importorskip("pandas")
    table = pandas.read_csv(out, sep="\t")  # Cohen-style readers see the plain TSV
    assert list(table.columns)[:6] == ["idx", "label", "predict", "radius", "correct", "time"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--sigma", "0.5"], "--sigma: the file has 0.25, this run 0.5"),
        (["--method", "lsmooth"], '--method: the file has "randsmooth", this run "lsmooth"'),
        (["--n", "21"], "--n: the file has 20, this run 21"),
        (["--n0", "6"], "--n0: the file has 5, this run 6"),
        (["--alpha", "0.01"], "--alpha: the file has 0.001, this run 0.01"),
        (["--batch", "11"], "--batch: the file has 10, this run 11"),
        (["--seed", "1"], "--seed: the file has 0, this run 1"),
        (["--model", "cifar10_resnet32"], "the model's architecture"),
    ],
)
def test_a_resume_with_any_other_setting_is_refused_and_leaves_the_file_untouched(
    change, named, data_dir, tmp_path, capsys
):
    out = tmp_path / "cert.tsv"
    assert _run([*ARGS, "--out", str(out), "--max", "1"]) == 0
    before = _snapshot(out)
    args = [*ARGS, "--out", str(out)]
    if change[0] == "--model":
        args[args.index("--model") + 1] = change[1]
    else:
        args += change
    message = _refusal(args, capsys)
    assert named in message and "other settings" in message, message
    assert _snapshot(out) == before


def test_a_resume_of_untrained_weights_with_trained_ones_is_refused(data_dir, tmp_path, capsys):
    bundled = ["certify", "--n0", "5", "--n", "20", "--batch", "10", "--skip", "5", "--device", "cpu"]
    out = tmp_path / "cert.tsv"
    assert _run([*bundled, "--untrained", "--max", "1", "--out", str(out)]) == 0
    before = _snapshot(out)
    assert "the model's weights" in _refusal([*bundled, "--out", str(out)], capsys)
    assert _snapshot(out) == before


def test_a_resume_with_another_profile_is_refused(data_dir, tmp_path, capsys):
    for seed in (0, 1):
        perturbations = torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
        LowRankCovariance.fit(perturbations, k=3).save(tmp_path / f"cov{seed}.pt")
    out = tmp_path / "d.tsv"
    dsmooth = [*ARGS, "--method", "dsmooth", "--out", str(out)]
    assert _run([*dsmooth, "--profile", str(tmp_path / "cov0.pt"), "--max", "1"]) == 0
    before = _snapshot(out)
    assert "--profile: the file has" in _refusal([*dsmooth, "--profile", str(tmp_path / "cov1.pt")], capsys)
    assert _snapshot(out) == before
    assert _run([*dsmooth, "--profile", str(tmp_path / "cov0.pt"), "--max", "2"]) == 0  # the same profile resumes
    assert [r["idx"] for r in _rows(out)] == ["0", "5"]


def test_a_tsv_of_an_earlier_version_is_refused_for_resume(data_dir, tmp_path, capsys):
    out = tmp_path / "old.tsv"
    header = "idx\tlabel\tpredict\tradius\tcorrect\ttime\tmethod\tmetric\tp_lower\n"
    out.write_text(header + "0\t0\t0\t0.1\t1\t1.0\tRandSmooth\tl2\t0.6\n")
    before = _snapshot(out)
    message = _refusal([*ARGS, "--out", str(out)], capsys)
    assert "no settings file" in message and "earlier version" in message and "another --out" in message
    assert _snapshot(out) == before


@pytest.mark.parametrize(
    ("selection", "named"),
    [(["--start", "99999"], "--start 99999 is past the data"), (["--max", "0"], "--max must be at least 1")],
)
def test_a_selection_of_no_images_is_refused_and_leaves_no_file(selection, named, data_dir, tmp_path, capsys):
    out = tmp_path / "none.tsv"
    assert named in _refusal([*ARGS, *selection, "--out", str(out)], capsys)
    assert not out.exists() and not settings_path(out).exists()


def test_settings_are_refused_before_any_model_is_loaded(data_dir, tmp_path, capsys, monkeypatch):
    from dsmooth_core.cli import certify_cmd

    monkeypatch.setattr(certify_cmd, "load_cifar_model", lambda *a: pytest.fail("loaded a model for bad settings"))
    assert "sigma must be a positive finite number" in _refusal([*ARGS, "--sigma", "-1", "--out", "x.tsv"], capsys)
    assert "n0 must be at least 1" in _refusal([*ARGS, "--n0", "0", "--out", "x.tsv"], capsys)


def test_the_noise_and_model_are_checked_once_per_command_not_per_image(data_dir, tmp_path, monkeypatch):
    from dsmooth_core import contract
    from dsmooth_core.noise import IsotropicGaussian

    draws, probes = [], []
    real_draws, real_probe = IsotropicGaussian.check_finite_draws, contract.probe
    monkeypatch.setattr(IsotropicGaussian, "check_finite_draws", lambda *a: draws.append(1) or real_draws(*a))
    monkeypatch.setattr(contract, "probe", lambda *a: probes.append(1) or real_probe(*a))
    out = tmp_path / "cert.tsv"
    assert _run([*ARGS, "--out", str(out), "--max", "3"]) == 0
    assert len(_rows(out)) == 3 and len(draws) == 1 and len(probes) == 1
