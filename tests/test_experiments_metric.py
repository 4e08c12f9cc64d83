"""Successful attacks in experiment records: the base model's clean and attacked answers, and PREDICT at x + delta."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from dsmooth_core import ABSTAIN, Cancelled, predict
from dsmooth_core.attacks import AttackConfig, square_then_fgsm
from dsmooth_core.data import load_cifar10
from dsmooth_core.device import generator_for
from dsmooth_core.experiments import ExperimentSpec, RecordStore, derive_seed, evaluation_indices, read_records
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
