"""Square Attack (docs/MATH.md section 5): the ball, the query accounting, the schedule, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dsmooth_core.attacks import p_selection, square_attack, square_side
from dsmooth_core.attacks._model import margin_loss
from dsmooth_core.attacks._streams import below, draw_keys, random_words, signs
from dsmooth_core.attacks.square import square_attack_keyed
from dsmooth_core.progress import Cancelled
from tests.toy import CLASSES, SHAPE, prototype_mlp


def _linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, CLASSES)).eval()


def _images(count: int, seed: int = 1) -> torch.Tensor:
    x = torch.rand(count, *SHAPE, generator=torch.Generator().manual_seed(seed))
    x[:, :, 0, 0] = 0.0  # pixels on the box's faces exercise the clipping
    x[:, :, 1, 1] = 1.0
    return x


def _predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def _attack(model, x, y, *, eps=0.05, n_queries=30, seed=0, **kwargs):
    return square_attack(
        model, x, y, eps=eps, n_queries=n_queries, generator=torch.Generator().manual_seed(seed), **kwargs
    )


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The toy MLP and 20 held-out images it classifies correctly."""
    return prototype_mlp(20)


@pytest.mark.parametrize(
    ("iteration", "n_queries", "expected"),
    [
        (0, 10000, 0.08),
        (10, 10000, 0.08),
        (11, 10000, 0.04),
        (50, 10000, 0.04),
        (51, 10000, 0.02),
        (201, 10000, 0.01),
        (1500, 10000, 0.08 / 32),
        (9999, 10000, 0.08 / 512),
        (2, 1000, 0.04),  # rescaled: iteration 2 of 1000 is iteration 20 of 10000
        (5, 1000, 0.04),  # iteration 50 of 10000 is still in (10, 50]
        (6, 1000, 0.02),  # iteration 60 of 10000
        (300, 1000, 0.08 / 64),
    ],
)
def test_p_schedule(iteration, n_queries, expected):
    assert p_selection(0.08, iteration, n_queries) == pytest.approx(expected)


def test_square_side():
    assert square_side(0.05, 32, 32) == 7  # round(sqrt(51.2))
    assert square_side(1.0, 8, 8) == 7  # capped at H - 1
    assert square_side(1e-6, 8, 8) == 1  # at least one pixel
    assert square_side(1.0, 5, 9) == 4  # the smaller side caps a non-square image


def test_output_in_ball_and_box_and_input_untouched():
    model = _linear_model()
    x = _images(16)
    y = _predicted(model, x)
    x_before, y_before = x.clone(), y.clone()
    result = _attack(model, x, y, eps=0.2, n_queries=40)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert result.adversarial.shape == x.shape
    assert (result.adversarial - x).abs().max() <= 0.2 + 1e-6
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1


@pytest.mark.parametrize("n_queries", [1, 2, 3, 5])
def test_query_accounting(n_queries):
    """Clean forward = query 1, stripes = query 2, then one per iteration, never above the budget."""
    model = _linear_model()
    x = _images(12)
    pred = _predicted(model, x)
    wrong = torch.arange(12) % 3 == 0
    y = torch.where(wrong, (pred + 1) % CLASSES, pred)  # a third of the images start misclassified
    result = _attack(model, x, y, eps=1e-3, n_queries=n_queries)
    assert result.queries.dtype == torch.int64
    assert (result.queries <= n_queries).all()
    # misclassified from the start: one query, untouched, a success
    assert (result.queries[wrong] == 1).all() and result.success[wrong].all()
    assert torch.equal(result.adversarial[wrong], x[wrong])
    # the others: clean and stripes forwards at least, the whole budget when never fooled
    assert (result.queries[~wrong] >= min(2, n_queries)).all()
    assert (result.queries[~result.success] == n_queries).all()
    if n_queries == 1:
        assert torch.equal(result.adversarial, x)


def test_success_means_misclassified_and_stops_early(trained):
    model, x, y = trained
    result = _attack(model, x, y, eps=0.3, n_queries=300)
    assert torch.equal(result.success, _predicted(model, result.adversarial) != y)
    with torch.no_grad():
        assert torch.equal(result.success, margin_loss(model(result.adversarial), y) < 0)
    fooled_early = result.success & (result.queries < 300)
    assert fooled_early.sum() >= 1


def test_fools_a_trained_model(trained):
    model, x, y = trained
    result = _attack(model, x, y, eps=0.3, n_queries=300)
    assert result.success.float().mean() >= 0.8
    assert (result.adversarial - x).abs().max() <= 0.3 + 1e-6


def test_improves_the_margin_over_the_stripes_alone(trained):
    """Query 2 is the stripes image: more queries must lower (never raise) the margin."""
    model, x, y = trained
    stripes_only = _attack(model, x, y, eps=0.05, n_queries=2)
    searched = _attack(model, x, y, eps=0.05, n_queries=200)
    with torch.no_grad():
        before = margin_loss(model(stripes_only.adversarial), y)
        after = margin_loss(model(searched.adversarial), y)
    assert (after <= before).all() and (after < before).any()


def test_deterministic_given_the_seed_and_leaves_global_rng_alone():
    model = _linear_model()
    x = _images(8)
    y = _predicted(model, x)
    state = torch.get_rng_state()
    first = _attack(model, x, y, seed=3)
    second = _attack(model, x, y, seed=3)
    other = _attack(model, x, y, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first.adversarial, second.adversarial)
    assert torch.equal(first.queries, second.queries)
    assert not torch.equal(first.adversarial, other.adversarial)


def test_an_image_does_not_depend_on_its_batch_mates():
    model = _linear_model()
    x = _images(8)
    y = _predicted(model, x)
    keys = draw_keys(torch.Generator().manual_seed(5), 8)
    whole = square_attack_keyed(model, x, y, keys, eps=0.05, n_queries=30, p_init=0.05, progress=None)
    alone = square_attack_keyed(model, x[5:6], y[5:6], keys[5:6], eps=0.05, n_queries=30, p_init=0.05, progress=None)
    assert torch.equal(whole.adversarial[5:6], alone.adversarial)
    assert torch.equal(whole.queries[5:6], alone.queries)


def test_progress_once_per_iteration_and_cancel():
    model = _linear_model()
    x = _images(4)
    y = _predicted(model, x)
    calls = []
    _attack(model, x, y, eps=1e-3, n_queries=12, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 10) for i in range(1, 11)]
    with pytest.raises(Cancelled):
        _attack(model, x, y, eps=1e-3, n_queries=12, progress=lambda done, total: done >= 3)


def test_reports_completion_when_all_images_stop_early(trained):
    model, x, y = trained
    calls = []
    result = _attack(model, x[:2], y[:2], eps=0.5, n_queries=500, progress=lambda *c: calls.append(c))
    assert result.success.all() and calls[-1] == (498, 498) and len(calls) < 498


def test_frozen_and_parameterless_models_keep_no_grad():
    model = _linear_model()
    x = _images(4)
    y = _predicted(model, x)
    _attack(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    assert _attack(model, x, y).adversarial.shape == x.shape
    stateless = nn.Sequential(nn.Flatten(), nn.Unflatten(1, (3, 64)), nn.Flatten(2), nn.AdaptiveAvgPool1d(1))
    scores = nn.Sequential(stateless, nn.Flatten())  # 3 logits: mean of each channel
    y3 = _predicted(scores, x)
    result = _attack(scores, x, y3, eps=0.3, n_queries=50)
    assert (result.adversarial - x).abs().max() <= 0.3 + 1e-6


def test_rejects_bad_parameters():
    model = _linear_model()
    x = _images(2)
    y = _predicted(model, x)
    for kwargs in ({"eps": 0.0}, {"eps": float("nan")}, {"n_queries": 0}, {"p_init": 0.0}, {"p_init": 1.5}):
        with pytest.raises(ValueError):
            _attack(model, x, y, **kwargs)
    with pytest.raises(ValueError):
        _attack(model, x, y[:1])


def test_streams_are_uniform():
    keys = draw_keys(torch.Generator().manual_seed(0), 4000)
    words = random_words(keys, 7, 3)
    positions = below(words[:, 0], 5)
    counts = torch.bincount(positions, minlength=5).float()
    assert positions.min() == 0 and positions.max() == 4
    assert (counts / 4000 - 0.2).abs().max() < 0.03
    plus = (signs(words[:, 1:], torch.float32) > 0).float()
    assert (plus.mean() - 0.5).abs() < 0.02
    # different streams of the same key are uncorrelated
    again = signs(random_words(keys, 8, 1)[:, 0], torch.float32)
    assert (again * signs(words[:, 1], torch.float32)).mean().abs() < 0.05
