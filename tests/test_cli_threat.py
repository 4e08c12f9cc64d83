"""The ``attack`` and ``profile`` commands on a tiny fake CIFAR-10 with an untrained ResNet-20."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import dsmooth_core.profiles as profiles
from dsmooth_core.attacks import PRESETS, AttackConfig, perturbation_norms, square_then_fgsm
from dsmooth_core.cli import main
from dsmooth_core.cli.threat_options import add_attack_options, attack_config, load_cifar_model
from dsmooth_core.data import DATA_DIR_ENV, balanced_subset, load_cifar10
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.tuning import read_tuning_record

MODEL = ["--model", "cifar10_resnet20", "--untrained", "--device", "cpu"]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Eight images gain nothing from threads, and on a busy CPU their synchronisation costs seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two random images per class and split, sorted by class like the real files."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(10, dtype=np.int64), 2)
        images = rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
        np.savez(folder / f"{split}.npz", images=images, labels=labels, classes=np.array(CLASSES))
    monkeypatch.setenv(DATA_DIR_ENV, str(folder.parent))
    return folder.parent


def _untrained_model():
    return load_cifar_model(argparse.Namespace(model="cifar10_resnet20", untrained=True, weights=None, device="cpu"))


def test_attack_saves_what_the_library_computes(data_dir, tmp_path, capsys):
    out = tmp_path / "attack.pt"
    assert main(["attack", *MODEL, "--subset", "8", "--seed", "1", "--n-queries", "10", "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=True)

    data = load_cifar10("test")
    indices = balanced_subset(data.labels, 8, seed=1)
    config = dataclasses.replace(PRESETS["conventional"], n_queries=10)
    model = _untrained_model()
    expected = square_then_fgsm(
        model,
        data.tensor(indices),
        torch.from_numpy(data.labels[indices]),
        config,
        generator=torch.Generator().manual_seed(1),
    )
    assert saved["indices"].tolist() == indices.tolist()
    assert saved["perturbation"].dtype == torch.float32 and saved["perturbation"].shape == (8, 3, 32, 32)
    for name in ("perturbation", "labels", "success", "queries", "clean_pred", "adv_pred", "linf", "l2", "l1"):
        torch.testing.assert_close(saved[name], getattr(expected, name), msg=name)
    for name, norm in perturbation_norms(saved["perturbation"]).items():
        torch.testing.assert_close(saved[name], norm)
    assert saved["perturbation"].abs().max() <= 8 / 255 + 1e-6
    assert int(saved["queries"].max()) <= 11  # 10 Square queries and FGSM's gradient
    meta = saved["metadata"]
    assert meta["model_name"] == "cifar10_resnet20" and meta["model_hash"] == model.info.weights_hash
    assert meta["model_identity"] == model.info.identity
    assert (meta["dataset"], meta["split"], meta["seed"]) == ("cifar10", "test", 1)
    assert meta["attack"] == config.to_dict() and meta["argv"][0] == "attack"
    printed = capsys.readouterr().out
    for phrase in ("attack success", "median queries", "mean norms: l_inf"):
        assert phrase in printed


def test_attack_slice_and_overrides(data_dir, tmp_path):
    out = tmp_path / "attack.pt"
    overrides = ["--eps-inf", "4/255", "--n-queries", "6", "--p-init", "0.1", "--fgsm", "none", "--no-project-linf"]
    argv = ["attack", *MODEL, "--split", "train", "--start", "1", "--skip", "5", "--max", "3", *overrides]
    assert main([*argv, "--batch", "2", "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved["indices"].tolist() == [1, 6, 11] and saved["metadata"]["split"] == "train"
    expected = AttackConfig(eps_inf=4 / 255, n_queries=6, p_init=0.1, fgsm=None, eps_fgsm=0.5, project_linf=False)
    assert saved["metadata"]["attack"] == expected.to_dict()
    assert int(saved["queries"].max()) <= 6 and float(saved["linf"].max()) <= 4 / 255 + 1e-6


def test_every_attack_field_can_be_overridden():
    parser = argparse.ArgumentParser()
    add_attack_options(parser)
    argv = ["--preset", "paper", "--eps-inf", "8/255", "--n-queries", "7", "--p-init", "0.1"]
    args = parser.parse_args([*argv, "--fgsm", "linf", "--eps-fgsm", "0.01", "--project-linf", "--window", "0,0,8"])
    config, preset = attack_config(args), PRESETS["paper"]
    for field in dataclasses.fields(AttackConfig):
        assert getattr(config, field.name) != getattr(preset, field.name), field.name
    assert attack_config(parser.parse_args([])) == PRESETS["conventional"]


def test_bad_threat_settings_are_clear_errors(data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", *MODEL, "--max", "2", "--eps-inf=-1/255", "--out", str(tmp_path / "a.pt")])
    assert exit_info.value.code == 2 and "eps_inf" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["attack", *MODEL, "--eps-inf", "eight", "--out", str(tmp_path / "a.pt")])
    assert "not a number or fraction: 'eight'" in capsys.readouterr().err
    assert not (tmp_path / "a.pt").exists()


def test_profile_builds_once_then_loads_from_the_cache(data_dir, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    argv = ["profile", *MODEL, "--calibration-size", "8", "--n-queries", "10", "--k", "3", "--keep", "nonzero"]
    assert main([*argv, "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    for phrase in ("kept 8 of 8 perturbations (nonzero)", "k 3 (rank 7)", "explained variance", "residual variance"):
        assert phrase in printed
    assert "mu_min" in printed and "mu_max" in printed
    (path,) = cache.iterdir()
    assert f"profile: {path}" in printed
    profile = ThreatProfile.load(path)
    assert profile.split == "train" and profile.covariance.k == 3
    assert list(profile.indices) == balanced_subset(load_cifar10("train").labels, 8, seed=0).tolist()
    profile.check_matches(_untrained_model())

    def no_attack(*args, **kwargs):
        raise AssertionError("the cached profile should have been loaded")

    monkeypatch.setattr(profiles, "square_then_fgsm", no_attack)
    assert main([*argv, "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert "loading the cached profile" in printed and f"profile: {path}" in printed


def test_profile_to_a_file_reports_a_clamped_k(data_dir, tmp_path, capsys):
    out = tmp_path / "profiles" / "mine.pt"
    argv = ["profile", *MODEL, "--calibration-split", "test", "--calibration-size", "8", "--n-queries", "10"]
    assert main([*argv, "--k", "50", "--keep", "nonzero", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "clamped from 50" in captured.out and "note: requested rank k=50 exceeds" in captured.err
    profile = ThreatProfile.load(out)
    assert profile.split == "test" and profile.covariance.k == profile.covariance.rank == 7
    profile.check_disjoint("cifar10", "train", list(profile.indices))


def test_profile_tunes_on_held_out_calibration_images(data_dir, tmp_path, capsys, monkeypatch):
    seen = []
    real_tune = profiles.tune_covariance
    monkeypatch.setattr(profiles, "tune_covariance", lambda *a, **kw: seen.append(kw) or real_tune(*a, **kw))
    out = tmp_path / "tuned.pt"
    argv = ["profile", *MODEL, "--calibration-size", "10", "--n-queries", "10", "--k", "4", "--keep", "nonzero"]
    tuning = ["--tune-sigma", "0.25", "--tune-share", "0.3", "--tune-n", "20", "--tune-n0", "10", "--tune-prune"]
    table = tmp_path / "tables" / "tuned.json"
    grid = ["--ranks", "4", "2", "--shrinkages", "0", "1", "--min-axis-ratio", "1.5", "--tuning-table", str(table)]
    assert main([*argv, *tuning, *grid, "--out", str(out)]) == 0
    assert [(kw["n0"], kw["n"], kw["prune"]) for kw in seen] == [(10, 20, True)]
    printed = capsys.readouterr().out
    assert "tuned at sigma 0.25 on 3 held-out calibration images (fitted on 7)" in printed
    profile = ThreatProfile.load(out)
    # det/trace x k 4, 2 x shrinkage 0, the floor's and 1 (isotropic: excluded, listed, not certified)
    assert len(profile.tuning["table"]) == 12 and profile.n_attacked == 7
    assert read_tuning_record(table) == profile.tuning
    excluded = [line for line in printed.splitlines() if line.startswith("-")]
    assert len(excluded) == 4 and all(line.endswith("not certified") for line in excluded)
    assert "excluded, axis ratio below 1.5: 4 of 12 settings" in printed
    assert sorted(profile.tuning["fitting_indices"] + profile.tuning["tuning_indices"]) == list(profile.indices)
    choice = profile.tuning["choice"]
    assert profile.covariance.normalization == choice["normalization"] and profile.covariance.k == choice["k"]
    assert sum(line.startswith("*") for line in printed.splitlines()) == 1
    assert "clamped" not in printed  # k is the tuning's choice
