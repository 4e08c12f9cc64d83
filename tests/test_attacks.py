"""Square then FGSM (the paper's threat), its configuration and the perturbation norms."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn

from dsmooth_core.attacks import (
    PRESETS,
    AttackConfig,
    fgsm_l2,
    perturbation_norms,
    square_attack,
    square_then_fgsm,
)
from dsmooth_core.progress import Cancelled

CONFIG = AttackConfig(eps_inf=0.1, n_queries=25, p_init=0.1, fgsm="l2", eps_fgsm=0.5, project_linf=False)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()


@pytest.fixture(scope="module")
def batch(model) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0] = (y[0] + 1) % 10  # one image starts misclassified
    return x, y


def _run(model, x, y, config=CONFIG, seed=0, **kwargs):
    return square_then_fgsm(model, x, y, config, generator=torch.Generator().manual_seed(seed), **kwargs)


def _predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def test_result_fields_are_consistent(model, batch):
    x, y = batch
    x_before = x.clone()
    result = _run(model, x, y)
    assert torch.equal(x, x_before)
    assert torch.equal(result.clean, x) and torch.equal(result.labels, y)
    assert torch.equal(result.perturbation, result.adversarial - result.clean)
    norms = perturbation_norms(result.perturbation)
    for name in ("linf", "l2", "l1"):
        assert torch.equal(getattr(result, name), norms[name])
    assert torch.equal(result.clean_pred, _predict(model, x))
    assert torch.equal(result.adv_pred, _predict(model, result.adversarial))
    assert torch.equal(result.success, result.adv_pred != y)
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    assert all(p.grad is None for p in model.parameters())


def test_is_square_followed_by_fgsm_with_one_more_query(model, batch):
    x, y = batch
    result = _run(model, x, y, seed=7)
    square = square_attack(
        model,
        x,
        y,
        eps=CONFIG.eps_inf,
        n_queries=CONFIG.n_queries,
        p_init=CONFIG.p_init,
        generator=torch.Generator().manual_seed(7),
    )
    assert torch.equal(result.adversarial, fgsm_l2(model, square.adversarial, y, CONFIG.eps_fgsm))
    assert torch.equal(result.queries, square.queries + 1)
    assert result.queries[0] == 2  # misclassified at once: clean forward + FGSM gradient
    without_fgsm = _run(model, x, y, dataclasses.replace(CONFIG, fgsm=None), seed=7)
    assert torch.equal(without_fgsm.adversarial, square.adversarial)
    assert torch.equal(without_fgsm.queries, square.queries)


def test_projection_keeps_the_linf_ball(model, batch):
    x, y = batch
    free = _run(model, x, y)
    assert free.linf.max() > CONFIG.eps_inf + 1e-3  # the l2 FGSM step leaves the ball...
    projected = _run(model, x, y, dataclasses.replace(CONFIG, project_linf=True))
    assert projected.linf.max() <= CONFIG.eps_inf + 1e-6  # ...and the projection brings it back
    assert projected.adversarial.min() >= 0 and projected.adversarial.max() <= 1


def test_chunks_give_the_one_batch_result(model, batch):
    """Square replays exactly per image; FGSM's batched gradient may differ in the last float bits."""
    x, y = batch
    square_only = dataclasses.replace(CONFIG, fgsm=None)
    whole, whole_square = _run(model, x, y, seed=3), _run(model, x, y, square_only, seed=3)
    for batch_size in (1, 3, 10, 64):
        chunked = _run(model, x, y, seed=3, batch_size=batch_size)
        assert torch.equal(chunked.queries, whole.queries)
        torch.testing.assert_close(chunked.adversarial, whole.adversarial, rtol=0, atol=1e-6)
        chunked_square = _run(model, x, y, square_only, seed=3, batch_size=batch_size)
        for field in dataclasses.fields(whole_square):
            assert torch.equal(getattr(chunked_square, field.name), getattr(whole_square, field.name))


def test_deterministic_given_the_seed(model, batch):
    x, y = batch
    assert torch.equal(_run(model, x, y, seed=1).adversarial, _run(model, x, y, seed=1).adversarial)
    assert not torch.equal(_run(model, x, y, seed=1).adversarial, _run(model, x, y, seed=2).adversarial)


def test_progress_spans_all_chunks_and_cancels(model, batch):
    x, y = batch
    calls = []
    _run(model, x, y, batch_size=4, progress=lambda done, total: calls.append((done, total)))
    per_chunk = CONFIG.n_queries - 2 + 1  # Square iterations + the chunk's end
    assert {total for _, total in calls} == {3 * per_chunk}
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == 3 * per_chunk
    with pytest.raises(Cancelled):
        _run(model, x, y, batch_size=4, progress=lambda done, total: done > per_chunk)


def test_perturbation_norms_closed_form():
    delta = torch.zeros(2, 1, 2, 2)
    delta[0, 0, 0, 0], delta[0, 0, 1, 1] = 3.0, -4.0
    delta[1] = -0.5
    norms = perturbation_norms(delta)
    torch.testing.assert_close(norms["linf"], torch.tensor([4.0, 0.5]))
    torch.testing.assert_close(norms["l2"], torch.tensor([5.0, 1.0]))
    torch.testing.assert_close(norms["l1"], torch.tensor([7.0, 2.0]))


def test_presets():
    paper, conventional = PRESETS["paper"], PRESETS["conventional"]
    assert (paper.eps_inf, paper.n_queries, paper.fgsm, paper.eps_fgsm) == (0.5, 5000, "l2", 0.5)
    assert not paper.project_linf
    assert math.isclose(conventional.eps_inf, 8 / 255) and conventional.project_linf
    reachable = PRESETS["reachable"]
    assert math.isclose(reachable.eps_inf, 2 / 255) and reachable.project_linf
    # the whole l_inf ball fits inside RandSmooth's l2 ceiling at sigma 0.25, n = 1000, alpha = 0.001 (0.62)
    assert reachable.eps_inf * math.sqrt(3 * 32 * 32) < 0.6
    with pytest.raises(dataclasses.FrozenInstanceError):
        paper.eps_inf = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        {"eps_inf": 0.0},
        {"eps_inf": -0.1},
        {"n_queries": 0},
        {"n_queries": 2.5},
        {"p_init": 0.0},
        {"p_init": 1.01},
        {"fgsm": "l1"},
        {"eps_fgsm": 0.0},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        dataclasses.replace(CONFIG, **bad)


def test_rejects_bad_batch_size_and_shapes(model, batch):
    x, y = batch
    with pytest.raises(ValueError):
        _run(model, x, y, batch_size=0)
    with pytest.raises(ValueError):
        _run(model, x[0], y[:1])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_model_device_and_returns_on_the_input_device(model, batch):
    x, y = batch
    projected = dataclasses.replace(CONFIG, project_linf=True)
    gpu_model = copy.deepcopy(model).to("cuda")
    for generator in (torch.Generator().manual_seed(0), torch.Generator("cuda").manual_seed(0)):
        result = square_then_fgsm(gpu_model, x, y, projected, generator=generator, batch_size=4)
        assert result.adversarial.device == x.device and result.queries.device == x.device
        assert result.linf.max() <= CONFIG.eps_inf + 1e-6
    assert all(p.grad is None for p in gpu_model.parameters())
