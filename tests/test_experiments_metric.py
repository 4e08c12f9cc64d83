"""Successful attacks in experiment records: the base model's clean and attacked answers, and PREDICT at x + delta."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from dsmooth_core import ABSTAIN, Cancelled, predict
from dsmooth_core.attacks import AttackConfig, square_then_fgsm
from dsmooth_core.certify import predict_from_votes
from dsmooth_core.cli import main
from dsmooth_core.data import load_cifar10
from dsmooth_core.device import generator_for
from dsmooth_core.experiments import (
    ExperimentSpec,
    RecordStore,
    certified_against_successful_attack,
    derive_seed,
    evaluation_indices,
    group_records,
    holm,
    paired_comparison,
    paired_table,
    read_records,
    report_tables,
    smoothed_at_attack,
    successful_attack_table,
    summary_table,
)
from dsmooth_core.experiments import report as report_module
from dsmooth_core.experiments import runner as runner_module
from dsmooth_core.experiments.plan import Setting
from dsmooth_core.experiments.runner import run_experiment
from dsmooth_core.models import ModelInfo, wrap
from dsmooth_core.profiles import Calibration, build_profile
from tests.fakedata import write_fake_cifar10

SHAPE = (3, 32, 32)
# a linear l_inf FGSM step large enough to move some class colours past a neighbour's, not all
ATTACK = AttackConfig(eps_inf=0.01, n_queries=5, fgsm="linf", eps_fgsm=0.12)
MISCLASSIFIED_CLASS = 0  # the model is made wrong on this class's clean images


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """A nearest-colour linear model of the fake test split: right on clean images but class 0's, and fooled
    by the FGSM step on the images whose colour lies near another class's."""
    root = write_fake_cifar10(tmp_path_factory.mktemp("data"), per_class=2)
    test, train = load_cifar10("test", root), load_cifar10("train", root)
    x, y = test.tensor(list(range(len(test.labels)))), torch.from_numpy(test.labels)
    means = torch.stack([x[y == c].mean(dim=(0, 2, 3)) for c in range(10)])  # (10, 3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3072, 10))
    with torch.no_grad():  # logit_c = -|mean colour - colour_c|^2 + const
        net[1].weight.copy_((2 * means[:, :, None].expand(10, 3, 1024) / 1024).reshape(10, 3072))
        net[1].bias.copy_(-(means**2).sum(1))
        net[1].bias[MISCLASSIFIED_CLASS] -= 10.0
    model = wrap(net, ModelInfo("colours", "cifar10", SHAPE, tuple(test.classes), "test"))
    indices = list(range(0, 20, 2))
    profile = build_profile(
        model,
        train.tensor(indices),
        torch.from_numpy(train.labels[indices]),
        Calibration(size=len(indices), attack=ATTACK, k=3, keep="nonzero"),
        indices=indices,
    )
    spec = ExperimentSpec(
        methods=("randsmooth", "dsmooth"),
        sigmas=(0.25,),
        ks=(3,),
        n0=5,
        ns=(20,),
        alphas=(0.2, 0.001),
        attack_name="colours",
        attack=ATTACK,
    )
    return {"model": model, "test": test, "profile": profile, "spec": spec}


def _attack_oracle(setup, idx: int):
    """The image's attack run apart from the runner, with the seed rule the runner documents."""
    model, test = setup["model"], setup["test"]
    return square_then_fgsm(
        model,
        test.tensor([idx]),
        torch.tensor([int(test.labels[idx])]),
        ATTACK,
        generator=generator_for(model, derive_seed(setup["spec"].seed, idx, "attack")),
    )


def test_records_name_successful_attacks_and_the_smoothed_answer_at_them(colours, tmp_path, monkeypatch):
    calls = []
    real_votes = runner_module.predict_votes
    monkeypatch.setattr(runner_module, "predict_votes", lambda *a, **k: calls.append(1) or real_votes(*a, **k))
    indices = evaluation_indices(colours["test"].labels, 10, seed=0)  # one image per class
    path = tmp_path / "records.jsonl"
    run_experiment(
        colours["model"], colours["test"], indices, colours["profile"], colours["spec"], RecordStore(path), batch_size=8
    )
    records = read_records(path)
    assert len(records) == 10 * 2 * 2

    fooled = set()
    for record in records:
        attack = _attack_oracle(colours, record["idx"])
        label = record["label"]
        clean_right = int(attack.clean_pred[0]) == label
        adversarial_wrong = int(attack.adv_pred[0]) != label
        assert record["attack_success"] == adversarial_wrong  # unchanged: wrong on the attacked image
        assert record["clean_base_correct"] == clean_right
        assert record["base_fooled"] == (clean_right and adversarial_wrong)
        if not record["base_fooled"]:
            assert record["adv_smoothed_prediction"] is None
            continue
        fooled.add(record["idx"])
        noise = runner_module._noises([_setting(record)], colours["profile"].covariance)[
            (record["method"], record["sigma"], record["k"])
        ]
        seed = derive_seed(0, record["idx"], f"{record['method']}:adversarial")
        expected = predict(
            colours["model"],
            attack.adversarial[0],
            noise,
            record["n"],
            record["alpha"],
            8,
            generator_for(colours["model"], seed),
        )
        assert record["adv_smoothed_prediction"] == expected

    by_idx = {r["idx"]: r for r in records}
    misclassified = [i for i, r in by_idx.items() if r["label"] == MISCLASSIFIED_CLASS]
    # the cases the fields tell apart all occur: fooled, not fooled, and wrong before any attack
    assert fooled and len(fooled) < 9 and misclassified
    assert all(by_idx[i]["attack_success"] and not by_idx[i]["base_fooled"] for i in misclassified)
    assert {r["adv_smoothed_prediction"] for r in records if r["base_fooled"]} - {ABSTAIN}
    # PREDICT runs only on successful attacks, once per image and method: the two alphas share the votes
    assert len(calls) == len(fooled) * 2


def test_an_interrupted_run_resumes_to_the_same_attacked_predictions(colours, tmp_path):
    indices = evaluation_indices(colours["test"].labels, 10, seed=0)[:5]
    one = dataclasses.replace(colours["spec"], alphas=(0.001,))
    args = (colours["model"], colours["test"], indices, colours["profile"], one)
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    run_experiment(*args, RecordStore(full), batch_size=8)
    with pytest.raises(Cancelled):
        run_experiment(*args, RecordStore(part), batch_size=8, progress=lambda d, t: len(read_records(part)) >= 3)
    run_experiment(*args, RecordStore(part), batch_size=8)
    strip = ("seconds", "batch")

    def results(path):
        return sorted(({k: v for k, v in r.items() if k not in strip} for r in read_records(path)), key=str)

    assert results(part) == results(full)


def _setting(record: dict) -> Setting:
    return Setting(record["method"], record["sigma"], record["k"], record["n"], record["alpha"])


# ---------------------------------------------------------------- hand-made records
def rec(idx: int, method: str = "randsmooth", *, outcome: str | None = None, covered: bool = False, **extra) -> dict:
    """A record with what the successful-attack analyses read. ``outcome``: None (an earlier version's record,
    without the fields), "clean_wrong", "not_fooled", or the smoothed answer at a successful attack
    ("right", "fooled", "abstains")."""
    record = {
        "dataset": "cifar10",
        "split": "test",
        "model": "m",
        "model_hash": "h",
        "profile_hash": "p",
        "profile_k": 10,
        "attack": "reachable",
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
        "prediction": 1,
        "correct": True,
        "radius": 0.5,
        "metric": {"dsmooth": "mahalanobis", "randsmooth": "l2", "lsmooth": "l1"}[method],
        "l2_inscribed": 0.5,
        "l1_radius": 0.5,
        "pert_l2": 0.4,
        "pert_l1": 20.0,
        "pert_linf": 0.01,
        "pert_mahalanobis": 0.4,
        "covered": covered,
        "attack_success": outcome != "not_fooled",
        "seconds": 1.0,
    }
    if outcome is not None:
        fooled = outcome in ("right", "fooled", "abstains")
        record["clean_base_correct"] = outcome != "clean_wrong"
        record["base_fooled"] = fooled
        record["adv_smoothed_prediction"] = {"right": 1, "fooled": 3, "abstains": ABSTAIN}.get(outcome)
    record.update(extra)
    record["key"] = f"{record['method']}:{record['profile_hash']}:{idx}"
    return record


def test_successful_attack_table_by_hand():
    records = [
        rec(0, outcome="right", covered=True),
        rec(1, outcome="fooled"),
        rec(2, outcome="abstains", covered=True),
        rec(3, outcome="clean_wrong", covered=True),  # the attack "succeeds" on an image already wrong: not counted
        rec(4, outcome="not_fooled", covered=True),
        rec(5, outcome=None, covered=True),  # an earlier version's record: unknown, neither yes nor no
    ]
    (group,) = group_records(records)
    (row,) = successful_attack_table([group])
    assert (row["images"], row["outcome_unknown"], row["successful_attacks"]) == (6, 1, 3)
    assert row["certified_against_successful_attack"] == 2
    assert row["certified_against_successful_attack_share"] == pytest.approx(2 / 3)
    shares = [row[f"smoothed_{a}_at_attack_share"] for a in ("right", "fooled", "abstains")]
    assert shares == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert [certified_against_successful_attack(r) for r in records] == [True, False, True, False, False, None]
    assert [smoothed_at_attack(r) for r in records] == ["right", "fooled", "abstains", None, None, None]
    (summary,) = summary_table([group])
    assert summary["certified_against_attack"] == pytest.approx(5 / 6)  # the old metric counts every covered image
    assert summary["certified_against_successful_attack_share"] == pytest.approx(2 / 3)


def test_records_of_an_earlier_version_read_as_unknown_not_zero(tmp_path):
    old = read_records("docs/reproduction/records/anisotropic_reachable.jsonl.gz")
    tables = report_tables(group_records(old))
    assert tables["successful_attacks"] and tables["paired_successful_attacks"] == []
    for row in tables["successful_attacks"]:
        assert row["outcome_unknown"] == row["images"] == 200
        assert row["successful_attacks"] is None and row["certified_against_successful_attack_share"] is None
    text = report_module._write_markdown(tmp_path / "summary.md", tables["summary"]).read_text()
    assert "| unknown | unknown | unknown |" in text and "nan" not in text
    # no successful attack at all is "n/a", not 0% and not unknown
    (row,) = summary_table(group_records([rec(0, outcome="not_fooled")]))
    assert row["successful_attacks"] == 0 and math.isnan(row["certified_against_successful_attack_share"])


def test_paired_sign_test_by_hand():
    # DSmooth certifies 5 successful attacks RandSmooth does not, none the other way: p = 2 / 2^5
    a = [rec(i, "dsmooth", outcome="right", covered=i < 7) for i in range(10)] + [rec(10, "dsmooth")]
    b = [rec(i, outcome="right", covered=i < 2) for i in range(10)] + [rec(10, outcome="right")]
    counts = paired_comparison(a, b)
    assert (counts.both, counts.only_a, counts.only_b, counts.neither, counts.unknown) == (2, 5, 0, 3, 1)
    assert counts.images == 10 and counts.p_value == pytest.approx(2 / 2**5)
    assert paired_comparison(b, a).p_value == pytest.approx(counts.p_value)
    assert paired_comparison(a, a).p_value == 1.0  # no discordant pair
    with pytest.raises(ValueError, match="attack_config"):
        paired_comparison(a, [rec(0, attack_config={"n_queries": 99})])


def test_holm_closed_form():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005, 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([0.2]) == [0.2] and holm([]) == []


def test_paired_table_tests_each_pair_of_smoothings_once_and_adjusts_over_them():
    records = []
    for i in range(12):
        records.append(rec(i, "dsmooth", outcome="right", covered=True))
        records.append(rec(i, "randsmooth", outcome="right", covered=i < 4))
        records.append(rec(i, "lsmooth", outcome="right", covered=False))
        # RandSmooth of a second run with another profile: the same smoothing, not a fourth contender
        records.append(rec(i, "randsmooth", outcome="right", covered=i < 4, profile_hash="q"))
    rows = paired_table(group_records(records))
    pairs = {(r["label_a"].split()[0], r["label_b"].split()[0]) for r in rows}
    assert len(rows) == 6 - 1 and ("RandSmooth", "RandSmooth") not in pairs  # 4 groups, the RandSmooth pair left out
    ds_rs = next(r for r in rows if r["label_a"].startswith("DSmooth") and r["label_b"].startswith("RandSmooth"))
    assert (ds_rs["both"], ds_rs["only_a"], ds_rs["only_b"]) == (4, 8, 0)
    assert ds_rs["p_value"] == pytest.approx(2 / 2**8)
    assert [r["p_holm"] for r in rows] == pytest.approx(holm([r["p_value"] for r in rows]))


def test_analyse_says_which_records_predate_the_fields(tmp_path, capsys):
    old = rec(0, outcome=None)
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (old, rec(1, outcome="fooled"))) + "\n")
    assert main(["experiment", "analyse", str(path), "--out", str(tmp_path / "out"), "--format", "html"]) == 0
    assert "note: 1 record(s) predate the successful-attack fields" in capsys.readouterr().out
    lines = (tmp_path / "out" / "successful_attacks.csv").read_text().splitlines()
    header, row = lines[0].split(","), lines[1].split(",")
    assert row[header.index("outcome_unknown")] == "1" and row[header.index("successful_attacks")] == "1"


def test_predict_from_votes_by_hand():
    # 10 of 10 against 0: two-sided binomial p = 2 / 2^10 = 0.00195, significant at 0.01 but not at 0.001
    assert predict_from_votes((0, 10, 0), 0.01) == 1 and predict_from_votes((0, 10, 0), 0.001) == ABSTAIN
    assert predict_from_votes((6, 6, 1), 0.5) == ABSTAIN  # a tie is never significant
    with pytest.raises(ValueError):
        predict_from_votes((1, 2), 1.5)


def test_runs_sharing_a_memo_write_the_records_of_separate_runs(colours, tmp_path, monkeypatch):
    """A study of several threats in one process attacks each image once per threat and certifies
    RandSmooth once per image; its records equal those of separate runs (the time aside)."""
    other = dataclasses.replace(ATTACK, eps_fgsm=0.05)
    specs = [colours["spec"], dataclasses.replace(colours["spec"], attack_name="other", attack=other)]
    indices = evaluation_indices(colours["test"].labels, 4, seed=0)
    args = (colours["model"], colours["test"], indices, colours["profile"])

    def run(spec, path, memo=None):
        run_experiment(*args, spec, RecordStore(path), batch_size=8, memo=memo)
        return {r["key"]: {k: v for k, v in r.items() if k != "seconds"} for r in read_records(path)}

    separate = [run(spec, tmp_path / f"alone{i}.jsonl") for i, spec in enumerate(specs)]
    calls = []
    real_certify = runner_module.certify
    monkeypatch.setattr(runner_module, "certify", lambda *a, **k: calls.append(a[2].key) or real_certify(*a, **k))
    memo = runner_module.RunMemo()
    shared = [run(spec, tmp_path / f"shared{i}.jsonl", memo) for i, spec in enumerate(specs)]
    assert shared == separate
    assert calls.count("randsmooth") == len(indices)  # once per image, not once per threat
    assert calls.count("dsmooth") == len(indices)  # the same profile in both runs: its noise is shared too
    assert len(memo.attacks) == 2 * len(indices)  # each threat attacks each image once
