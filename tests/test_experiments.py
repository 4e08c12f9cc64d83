"""Experiments: analyses on hand-made records, the cover check, resuming, sharding, and the CLI end to end."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import time

import plotly.graph_objects as go
import pytest
import torch
from torch import nn

from dsmooth_core import ABSTAIN, AnisotropicGaussian, Cancelled, IsotropicGaussian, Laplace, LowRankCovariance, compare
from dsmooth_core.attacks import AttackConfig
from dsmooth_core.cli import main
from dsmooth_core.data import load_cifar10
from dsmooth_core.experiments import (
    ExperimentSpec,
    RecordStore,
    ablation_groups,
    attack_table,
    certified_accuracy,
    curve,
    evaluation_indices,
    group_records,
    high_probability_lower_bound,
    load_records,
    parse_shard,
    perturbation_distances,
    png_export,
    read_records,
    run_experiment,
    summary_table,
    time_table,
    write_report,
)
from dsmooth_core.experiments import report as report_module
from dsmooth_core.experiments import runner as runner_module
from dsmooth_core.models import DEFAULT_MODEL, ModelInfo, cifar_resnet, state_dict_hash, wrap
from dsmooth_core.profiles import Calibration, ProfileMismatchError, build_profile
from tests.fakecerts import certificate
from tests.fakedata import write_fake_cifar10
from tests.oracles import anisotropic_perturbations

SHAPE = (3, 32, 32)


@pytest.fixture(autouse=True)
def one_thread():
    """One thread is several times faster than two on a CPU shared with other work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- hand-made records
def rec(idx: int, method: str = "randsmooth", *, radius: float, correct: bool = True, **extra) -> dict:
    """A record with only what the analyses read; the key stands for everything else."""
    metric = {"dsmooth": "mahalanobis", "randsmooth": "l2", "lsmooth": "l1"}[method]
    base = {
        "dataset": "cifar10",
        "split": "test",
        "model": "m",
        "model_hash": "h",
        "profile_hash": "p",
        "profile_k": 10,
        "attack": "paper",
        "attack_config": {"n_queries": 10},
        "seed": 0,
        "n0": 10,
        "method": method,
        "sigma": 0.25,
        "k": 10 if method == "dsmooth" else None,
        "n": 100,
        "alpha": 0.001,
        "idx": idx,
        "label": 1,
        "prediction": 1 if correct else (-1 if radius == 0 else 2),
        "correct": correct,
        "radius": radius,
        "metric": metric,
        "l2_inscribed": radius / 2,
        "l1_radius": radius,
        "pert_l2": 1.0,
        "pert_l1": 1.0,
        "pert_linf": 1.0,
        "pert_mahalanobis": 1.0,
        "covered": False,
        "attack_success": True,
        "seconds": 1.0,
    }
    record = {**base, **extra}
    record["key"] = json.dumps([record["method"], record["sigma"], record["k"], record["n"], record["alpha"], idx])
    return record


def test_certified_accuracy_by_hand():
    # 5 images: certified at 0.5 and 1.0, abstained, wrong (its radius must not count), certified at 0.25
    records = [
        rec(0, radius=0.5),
        rec(1, radius=1.0),
        rec(2, radius=0.0, correct=False),
        rec(3, radius=0.7, correct=False),
        rec(4, radius=0.25),
    ]
    radii = [0.0, 0.25, 0.3, 0.5, 0.6, 1.0, 1.01]
    expected = [3 / 5, 3 / 5, 2 / 5, 2 / 5, 1 / 5, 1 / 5, 0.0]
    assert certified_accuracy(records, radii) == pytest.approx(expected)
    # l2_inscribed is radius / 2 in these records
    assert certified_accuracy(records, [0.25, 0.26], "l2_inscribed") == pytest.approx([2 / 5, 1 / 5])
    (group,) = group_records(records)
    points = curve(group)
    assert [p["radius"] for p in points] == [0.0, 0.25, 0.5, 1.0]
    assert [p["certified_accuracy"] for p in points] == pytest.approx([3 / 5, 3 / 5, 2 / 5, 1 / 5])
    (row,) = attack_table([group])
    assert (row["accuracy"], row["abstain_rate"], row["median_certified_radius"]) == (3 / 5, 1 / 5, 0.5)


def test_high_probability_bound_by_hand():
    # Binomial(100, 0.001): P(F = 0) = 0.999^100 = 0.9048 < 0.99 <= P(F <= 1) = 0.9048 + 0.0906, so q = 1
    assert high_probability_lower_bound(100, 200, 0.001, 0.01) == pytest.approx(99 / 200)
    # with alpha = 0.1 and m = 10: P(F <= 2) = 0.9298 < 0.95 <= P(F <= 3) = 0.9872, so q = 3
    assert high_probability_lower_bound(10, 20, 0.1, 0.05) == pytest.approx(7 / 20)
    assert high_probability_lower_bound(0, 20, 0.1, 0.05) == 0.0
    with pytest.raises(ValueError):
        high_probability_lower_bound(1, 2, 0.1, 0.0)


def test_groups_tables_and_ablations():
    records = [
        *(rec(i, "dsmooth", radius=r, k=3, covered=c) for i, (r, c) in enumerate([(1.0, True), (2.0, False)])),
        *(rec(i, "dsmooth", radius=r, k=10, covered=True, seconds=3.0) for i, r in enumerate([1.5, 2.5])),
        *(rec(i, "randsmooth", radius=0.2, covered=False, seconds=s) for i, s in enumerate([1.0, 3.0])),
        *(rec(i, "lsmooth", radius=0.4, n=1000) for i in range(2)),
        *(rec(i, "lsmooth", radius=0.4, n=100) for i in range(2)),
    ]
    groups = group_records(reversed(records))
    assert [g.method for g in groups] == ["dsmooth", "dsmooth", "randsmooth", "lsmooth", "lsmooth"]
    assert groups[0].label == "DSmooth (Mahalanobis) k=3, n=100" and groups[2].label == "RandSmooth (l2) n=100"
    attack = {row["label"]: row for row in attack_table(groups)}
    assert attack["DSmooth (Mahalanobis) k=3, n=100"]["certified_against_attack"] == 0.5
    assert attack["DSmooth (Mahalanobis) k=10, n=100"]["certified_against_attack"] == 1.0
    assert attack["RandSmooth (l2) n=100"]["certified_against_attack"] == 0.0
    times = {row["label"]: row for row in time_table(groups)}
    assert times["RandSmooth (l2) n=100"]["mean_seconds"] == 2.0
    assert times["RandSmooth (l2) n=100"]["std_seconds"] == 1.0
    summary = {row["label"]: row for row in summary_table(groups)}
    ds3 = summary["DSmooth (Mahalanobis) k=3, n=100"]
    assert (ds3["median_certified_radius"], ds3["median_l2_inscribed"], ds3["mean_seconds"]) == (1.5, 0.75, 1.0)
    assert summary["RandSmooth (l2) n=100"]["certified_against_attack"] == 0.0
    assert [g.config["k"] for g in ablation_groups(groups, "k")] == [3, 10]
    assert [g.config["n"] for g in ablation_groups(groups, "n")] == [100, 1000]
    assert ablation_groups(groups, "alpha") == []


def test_merging_deduplicates_by_key(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    store_a, store_b = RecordStore(a), RecordStore(b)
    for record in (rec(0, radius=0.1), rec(1, radius=0.2)):
        store_a.append(record)
    for record in (rec(1, radius=0.2), rec(2, radius=0.3)):
        store_b.append(record)
    assert [r["idx"] for r in load_records([a, b])] == [0, 1, 2]
    # an interrupted write leaves a line without its newline: it is dropped, the rest kept
    with a.open("a") as f:
        f.write('{"key": "torn", "idx"')
    with pytest.warns(UserWarning, match="incomplete last line"):
        store = RecordStore(a)
    assert len(store) == 2 and "torn" not in store and len(read_records(a)) == 2


# ---------------------------------------------------------------- the cover check
def test_gzipped_record_files_are_read(tmp_path):
    records = [rec(i, radius=0.5) for i in range(3)]
    plain, packed = tmp_path / "r.jsonl", tmp_path / "r.jsonl.gz"
    plain.write_text("".join(json.dumps(r) + "\n" for r in records))
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_records(packed) == read_records(plain) == records
    with pytest.raises(ValueError, match="read-only"):
        RecordStore(packed)


def test_cover_check_in_each_metric():
    cov = LowRankCovariance.fit(anisotropic_perturbations(40, (3, 4, 4), seed=1), k=3)
    radius, inside, outside = 0.5, 0.999, 1.001
    noises = {"l2": IsotropicGaussian(0.25), "l1": Laplace(0.1), "mahalanobis": AnisotropicGaussian(0.25, cov)}

    def covered(delta: torch.Tensor, metric: str, prediction: int = 1) -> bool:
        noise = noises[metric]
        result = compare(certificate(noise, prediction, radius), noise, delta, label=1)
        assert result.distance == pytest.approx(perturbation_distances(delta, cov)[metric], rel=1e-6)
        return result.certified

    e0 = torch.zeros(3, 4, 4)
    e0[0, 0, 0] = 1.0
    assert perturbation_distances(e0 * radius, cov)["l2"] == pytest.approx(radius)
    assert covered(e0 * radius * inside, "l2") and not covered(e0 * radius * outside, "l2")
    assert not covered(e0 * radius * inside, "l2", prediction=2)  # a wrong label is never covered

    spread = torch.zeros(3, 4, 4)
    spread[0, 0, :4] = torch.tensor([1.0, -1.0, 1.0, -1.0]) / 4  # l1 norm 1, l2 norm 1/2
    assert covered(spread * radius * inside, "l1") and not covered(spread * radius * outside, "l1")
    assert covered(spread * radius * outside, "l2")  # the same perturbation is inside the l2 ball

    u1 = cov.eigenvectors[:, 0].reshape(3, 4, 4).float()
    unit = math.sqrt(cov.geometric_mean / float(cov.eigenvalues[0]))  # MAHL_St(u1) = sqrt(gm / lambda_1)
    assert perturbation_distances(u1, cov)["mahalanobis"] == pytest.approx(unit, rel=1e-5)
    assert covered(u1 * radius / unit * inside, "mahalanobis")
    assert not covered(u1 * radius / unit * outside, "mahalanobis")
    # an abstention covers nothing, not even no perturbation
    abstained = compare(certificate(noises["l2"], ABSTAIN, 0.0), noises["l2"], torch.zeros(3, 4, 4), label=1)
    assert abstained.inside is False and abstained.certified is False


def test_inscribed_radii_per_method():
    cov = LowRankCovariance.fit(anisotropic_perturbations(40, (3, 4, 4), seed=1), k=3)
    d = 48

    def radii(noise, radius: float = 2.0) -> tuple[float, float]:
        result = compare(certificate(noise, 1, radius), noise, None, dim=d)
        return result.l2_inscribed, result.l1_inscribed

    assert radii(IsotropicGaussian(0.25)) == (2.0, 2.0)
    assert radii(Laplace.from_sigma(0.25)) == pytest.approx((2.0 / math.sqrt(d), 2.0))
    l2, l1 = radii(AnisotropicGaussian(0.25, cov))
    assert l2 == pytest.approx(2.0 * math.sqrt(cov.mu_min))
    # the l1 ball's vertices r e_i all lie in the ellipsoid, the farthest exactly on its boundary
    vertices = torch.eye(d).reshape(d, 3, 4, 4) * l1
    assert float(cov.mahalanobis(vertices).max()) == pytest.approx(2.0, rel=1e-6)
    noise = IsotropicGaussian(0.25)
    assert compare(certificate(noise, ABSTAIN, 0.0), noise, None, dim=d).l2_inscribed == 0.0


# ---------------------------------------------------------------- running: resume and shards
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny linear CIFAR-shaped model, fake data and a profile fitted on the train split."""
    root = write_fake_cifar10(tmp_path_factory.mktemp("data"), per_class=2)
    test, train = load_cifar10("test", root), load_cifar10("train", root)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(10, 3072, generator=torch.Generator().manual_seed(0)) * 0.05)
        net[1].bias.zero_()
    info = ModelInfo("tiny", "cifar10", SHAPE, tuple(test.classes), "test")
    model = wrap(net, info)
    attack = AttackConfig(eps_inf=0.1, n_queries=10)
    indices = list(range(0, 20, 2))
    profile = build_profile(
        model,
        train.tensor(indices),
        torch.from_numpy(train.labels[indices]),
        Calibration(size=len(indices), attack=attack, k=3, keep="nonzero"),
        indices=indices,
    )
    spec = ExperimentSpec(sigmas=(0.25,), ks=(2, 3), n0=5, ns=(20,), attack_name="tiny", attack=attack)
    return {"model": model, "test": test, "profile": profile, "spec": spec}


def _run(setup, path, indices, **kwargs):
    return run_experiment(
        setup["model"],
        setup["test"],
        indices,
        setup["profile"],
        setup["spec"],
        RecordStore(path),
        batch_size=8,
        **kwargs,
    )


def _results(records: list[dict]) -> list[dict]:
    """Records without the wall-clock time, in key order, for exact comparisons."""
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in records), key=lambda r: r["key"])


def test_records_resume_after_interruption_and_equal_an_uninterrupted_run(setup, tmp_path, monkeypatch):
    calls = []
    real_certify = runner_module.certify
    monkeypatch.setattr(runner_module, "certify", lambda *a, **k: calls.append(1) or real_certify(*a, **k))
    indices = evaluation_indices(setup["test"].labels, 4, seed=0)
    settings = 4  # dsmooth k=2, dsmooth k=3, randsmooth, lsmooth

    full = tmp_path / "full.jsonl"
    summary = _run(setup, full, indices)
    assert summary.records_written == 4 * settings and len(calls) == 4 * settings
    records = read_records(full)
    assert {(r["method"], r["k"]) for r in records} == {
        ("dsmooth", 2),
        ("dsmooth", 3),
        ("randsmooth", None),
        ("lsmooth", None),
    }
    assert all(
        r["metric"] == {"dsmooth": "mahalanobis", "randsmooth": "l2", "lsmooth": "l1"}[r["method"]] for r in records
    )

    calls.clear()
    again = _run(setup, full, indices)  # everything is there: nothing is certified
    assert (again.records_written, again.images_skipped, len(calls)) == (0, 4, 0)

    part = tmp_path / "part.jsonl"
    with pytest.raises(Cancelled):  # stop as soon as 5 records are written: mid-way through the second image
        _run(setup, part, indices, progress=lambda done, total: len(read_records(part)) >= 5)
    done = len(read_records(part))
    assert 0 < done < 4 * settings
    calls.clear()
    resumed = _run(setup, part, indices)
    assert resumed.records_written == 4 * settings - done == len(calls)
    assert _results(read_records(part)) == _results(records)


def test_shards_together_equal_the_unsharded_run(setup, tmp_path):
    labels = setup["test"].labels
    whole = evaluation_indices(labels, 5, seed=0)
    shards = [evaluation_indices(labels, 5, seed=0, shard=parse_shard(f"{i}/2")) for i in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(whole) and not set(shards[0]) & set(shards[1])
    _run(setup, tmp_path / "all.jsonl", whole)
    for i, indices in enumerate(shards):
        _run(setup, tmp_path / f"shard{i}.jsonl", indices)
    merged = load_records([tmp_path / "shard0.jsonl", tmp_path / "shard1.jsonl"])
    assert _results(merged) == _results(read_records(tmp_path / "all.jsonl"))
    with pytest.raises(ValueError):
        parse_shard("2/2")


def test_alphas_share_noise_draws_and_equal_separate_runs(setup, tmp_path, monkeypatch):
    calls = []
    real_certify = runner_module.certify
    monkeypatch.setattr(runner_module, "certify", lambda *a, **k: calls.append(1) or real_certify(*a, **k))
    indices = evaluation_indices(setup["test"].labels, 3, seed=0)
    grid = dataclasses.replace(setup["spec"], methods=("randsmooth", "dsmooth"), ks=(3,), alphas=(0.2, 0.01))
    together = tmp_path / "together.jsonl"
    run_experiment(setup["model"], setup["test"], indices, setup["profile"], grid, RecordStore(together), batch_size=8)
    assert len(calls) == 3 * 2 and len(read_records(together)) == 3 * 2 * 2  # one draw per image and method
    apart = []
    for alpha in grid.alphas:
        one = dataclasses.replace(grid, alphas=(alpha,))
        path = tmp_path / f"alpha{alpha}.jsonl"
        run_experiment(setup["model"], setup["test"], indices, setup["profile"], one, RecordStore(path), batch_size=8)
        apart += read_records(path)
    assert _results(read_records(together)) == _results(apart)
    p_lower = {(r["idx"], r["method"], r["alpha"]): r["p_lower"] for r in apart}
    assert all(p_lower[(idx, method, 0.2)] > p_lower[(idx, method, 0.01)] for idx, method, _ in p_lower)


def test_refuses_images_the_profile_was_calibrated_on(setup, tmp_path):
    with pytest.raises(ProfileMismatchError):
        run_experiment(
            setup["model"],
            setup["test"],
            [0, 2],
            setup["profile"],
            setup["spec"],
            RecordStore(tmp_path / "r.jsonl"),
            split="train",
        )


def test_records_are_keyed_by_the_model_identity_not_its_weights(setup, tmp_path):
    """Another normalization of the same weights (as a re-stated --normalization) never reuses a record."""
    legacy = dataclasses.replace(setup["profile"], model_identity="")  # matched by weights alone
    path = tmp_path / "r.jsonl"
    indices = evaluation_indices(setup["test"].labels, 2, seed=0)
    runs = {}
    for std in (1.0, 0.5):
        info = dataclasses.replace(setup["model"].info, std=(std,) * 3, weights_hash="")
        model = wrap(setup["model"].net, info)
        assert model.info.weights_hash == setup["model"].info.weights_hash
        runs[std] = run_experiment(
            model, setup["test"], indices, legacy, setup["spec"], RecordStore(path), batch_size=8
        )
    assert runs[1.0].records_written == runs[0.5].records_written == 2 * 4  # nothing reused
    records = read_records(path)
    assert len({r["model_identity"] for r in records}) == 2 and len({r["model_hash"] for r in records}) == 1
    assert {r["batch"] for r in records} == {8}


def test_a_record_file_of_an_earlier_version_is_refused_untouched(setup, tmp_path):
    path = tmp_path / "r.jsonl"
    _run(setup, path, evaluation_indices(setup["test"].labels, 1, seed=0))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "model_identity"}) + "\n" for r in lines))
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"record\(s\) of an earlier version.*another --records file"):
        _run(setup, path, evaluation_indices(setup["test"].labels, 2, seed=0))
    assert path.read_bytes() == before


def test_a_profile_of_another_model_is_refused_and_the_run_leaves_no_file(setup, tmp_path, monkeypatch, capsys):
    with pytest.raises(ProfileMismatchError, match="identity"):
        other = wrap(setup["model"].net, dataclasses.replace(setup["model"].info, mean=(0.5,) * 3, weights_hash=""))
        run_experiment(other, setup["test"], [1], setup["profile"], setup["spec"], RecordStore(tmp_path / "a.jsonl"))
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=2)))
    setup["profile"].save(tmp_path / "tiny_profile.pt")  # built on the tiny model, not on the CLI's
    records = tmp_path / "refused.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        main([*CLI, "--profile", str(tmp_path / "tiny_profile.pt"), "--records", str(records)])
    assert exit_info.value.code == 2 and "build a profile for this model" in capsys.readouterr().err
    assert not records.exists()


def test_report_falls_back_to_html_when_png_export_fails(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no Chromium here")

    monkeypatch.setattr(report_module, "export_png", broken)
    records = [rec(i, m, radius=0.5) for i in range(3) for m in ("dsmooth", "randsmooth", "lsmooth")]
    files = write_report(records, tmp_path / "out", gamma=0.01)
    assert files.note and "no Chromium here" in files.note
    assert files.charts and all(p.suffix == ".html" and p.exists() for p in files.charts)
    assert {p.name for p in files.tables} == {
        "certified_accuracy.csv",
        "certified_accuracy_l2.csv",
        "certified_accuracy_l1.csv",
        "certified_against_attack.csv",
        "successful_attacks.csv",
        "paired_successful_attacks.csv",
        "time_per_image.csv",
        "summary.csv",
        "summary.md",
    }


def test_a_stalled_png_export_is_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(png_export, "_EXPORT_SCRIPT", "import time; time.sleep(60)")
    started = time.perf_counter()
    with pytest.raises(TimeoutError, match="did not finish"):
        png_export.export_png([go.Figure()], [tmp_path / "a.png"], width=100, timeout=1)
    assert time.perf_counter() - started < 20


# ---------------------------------------------------------------- the command line, end to end
CLI = [
    "experiment",
    "run",
    "--model",
    "cifar10_resnet20",
    "--untrained",
    "--eval-size",
    "4",
    "--calibration-size",
    "10",
    "--n0",
    "5",
    "--n",
    "20",
    "--k",
    "3",
    "--attack-queries",
    "10",
    "--batch",
    "25",
    "--device",
    "cpu",
]


@pytest.mark.slow
def test_cli_runs_shards_and_analyses(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=2)))
    common = [*CLI, "--profile-dir", str(tmp_path / "profiles")]
    assert main([*common, "--records", str(tmp_path / "all.jsonl")]) == 0
    whole = read_records(tmp_path / "all.jsonl")
    assert len(whole) == 4 * 3 and {r["idx"] for r in whole} == set(
        evaluation_indices(load_cifar10("test").labels, 4, seed=0)
    )
    for i in range(2):
        assert main([*common, "--shard", f"{i}/2", "--records", str(tmp_path / f"s{i}.jsonl")]) == 0
    shards = [tmp_path / "s0.jsonl", tmp_path / "s1.jsonl"]
    assert _results(load_records(shards)) == _results(whole)

    out = tmp_path / "report"
    assert main(["experiment", "analyse", *map(str, shards), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "12 records from 2 file(s)" in printed
    rows = (out / "certified_accuracy.csv").read_text().splitlines()
    assert rows[0].startswith("label,method,sigma,k,n0,n,alpha,images,metric,radius,certified_accuracy,lower_bound")
    summary = (out / "summary.md").read_text().splitlines()
    assert summary[0].startswith("| label | images | metric | accuracy |") and len(summary) == 2 + 3
    charts = sorted(p.suffix for p in out.iterdir() if p.suffix in (".png", ".html"))
    assert len(charts) == 5 and len(set(charts)) == 1
    assert charts[0] == ".png" or "note: PNG export failed" in printed


def test_cli_evaluates_a_weights_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=2)))
    net = cifar_resnet("resnet20")
    weights = tmp_path / "my_resnet20.pt"
    torch.save(net.state_dict(), weights)
    args = [a for a in CLI if a not in ("cifar10_resnet20", "--untrained")]
    args[args.index("--model") + 1 : args.index("--model") + 1] = [DEFAULT_MODEL, "--weights", str(weights)]
    records_path = tmp_path / "mine.jsonl"
    args += ["--methods", "randsmooth", "--eval-size", "2", "--profile-dir", str(tmp_path / "profiles")]
    assert main([*args, "--records", str(records_path)]) == 0
    records = read_records(records_path)
    assert len(records) == 2
    assert {(r["model"], r["model_hash"]) for r in records} == {("my_resnet20", state_dict_hash(net))}


def test_command_lines_are_written_from_the_parser_and_parse_back():
    from dsmooth_core.cli.command_line import command_line

    line = command_line(("experiment", "run"), {"records": "r.jsonl", "untrained": True, "k": (3, 5), "n0": 7})
    assert line.startswith("python -m dsmooth_core experiment run ")
    assert "--untrained" in line and "--k 3 5" in line and "--n0 7" in line and "--records r.jsonl" in line
    assert "--untrained" not in command_line(("experiment", "run"), {"records": "r.jsonl", "untrained": False})
    with pytest.raises(ValueError, match="no option for eval_sizes"):
        command_line(("experiment", "run"), {"records": "r.jsonl", "eval_sizes": 3})
    with pytest.raises(ValueError, match="refuses"):  # a value the parser would not accept is refused
        command_line(("experiment", "run"), {"records": "r.jsonl", "methods": ("gauss",)})
