"""Structured threats (attacks/support.py): which pixels move, which move together, and that the
whole-image threat keeps its identity."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dsmooth_core.attacks import PRESETS, AttackConfig, square_attack, square_then_fgsm
from dsmooth_core.attacks.support import WHOLE_IMAGE, Support
from dsmooth_core.cli.threat_options import add_attack_options, attack_config
from dsmooth_core.settings import canonical
from tests.toy import prototype_mlp

WINDOW = Support(window=(-4, -4, 4))  # the 4 x 4 bottom-right corner of an 8 x 8 image
GRID = Support(grid=2)
WEIGHTED = Support(window=(0, 0, 4), outside=0.25)


@pytest.fixture(scope="module")
def trained():
    """The toy MLP and 20 held-out images it classifies correctly; pixels kept off the box's faces so
    that clipping to [0, 1] never breaks the structure."""
    model, x, y = prototype_mlp(20)
    return model, 0.2 + 0.6 * x, y


def _config(support: Support, eps: float = 0.2, fgsm: str | None = "l2") -> AttackConfig:
    return AttackConfig(eps_inf=eps, n_queries=40, fgsm=fgsm, eps_fgsm=0.5, project_linf=True, support=support)


def _block_constant(delta: torch.Tensor, grid: int) -> bool:
    pooled = F.avg_pool2d(delta, grid).repeat_interleave(grid, -2).repeat_interleave(grid, -1)
    return torch.allclose(delta, pooled, atol=1e-6)


@pytest.mark.parametrize("fgsm", [None, "l2", "linf"])
def test_a_window_threat_moves_only_the_window(trained, fgsm):
    model, x, y = trained
    result = square_then_fgsm(model, x, y, _config(WINDOW, fgsm=fgsm), generator=torch.Generator().manual_seed(0))
    delta = result.perturbation
    outside = torch.ones_like(delta, dtype=torch.bool)
    outside[..., 4:, 4:] = False
    assert delta[outside].abs().max() == 0
    assert delta.abs().max() <= 0.2 + 1e-6 and delta[..., 4:, 4:].abs().max() > 0.1


@pytest.mark.parametrize("fgsm", [None, "l2"])
def test_a_grid_threat_moves_blocks_together(trained, fgsm):
    model, x, y = trained
    result = square_then_fgsm(model, x, y, _config(GRID, fgsm=fgsm), generator=torch.Generator().manual_seed(0))
    assert _block_constant(result.perturbation, 2)
    assert result.perturbation.abs().max() <= 0.2 + 1e-6
    # the same search on the whole image is not block-constant: the test can fail
    free = square_then_fgsm(model, x, y, _config(WHOLE_IMAGE, fgsm=fgsm), generator=torch.Generator().manual_seed(0))
    assert not _block_constant(free.perturbation, 2)


def test_a_weighted_budget_bounds_each_pixel(trained):
    model, x, y = trained
    result = square_then_fgsm(model, x, y, _config(WEIGHTED), generator=torch.Generator().manual_seed(0))
    delta = result.perturbation
    inside = torch.zeros_like(delta, dtype=torch.bool)
    inside[..., :4, :4] = True
    assert delta[inside].abs().max() <= 0.2 + 1e-6 and delta[inside].abs().max() > 0.1
    assert delta[~inside].abs().max() <= 0.05 + 1e-6 and delta[~inside].abs().max() > 0.02


def test_structured_square_fools_and_replays_in_chunks(trained):
    model, x, y = trained
    config = dataclasses.replace(_config(WINDOW, eps=0.5), n_queries=200)
    whole = square_then_fgsm(model, x, y, config, generator=torch.Generator().manual_seed(3))
    chunked = square_then_fgsm(model, x, y, config, generator=torch.Generator().manual_seed(3), batch_size=7)
    assert torch.equal(whole.queries, chunked.queries)
    torch.testing.assert_close(whole.perturbation, chunked.perturbation, atol=1e-6, rtol=0)
    assert whole.success.any()  # the window alone can fool the toy model


def test_the_fgsm_step_follows_the_projected_gradient(trained):
    """An l2 FGSM step of a grid threat is the block-averaged gradient, scaled to eps_fgsm."""
    from dsmooth_core.attacks.fgsm import input_gradient

    model, x, y = trained
    config = AttackConfig(eps_inf=1.0, n_queries=1, fgsm="l2", eps_fgsm=0.3, support=GRID)
    result = square_then_fgsm(model, x, y, config, generator=torch.Generator().manual_seed(0))
    projected = F.avg_pool2d(input_gradient(model, x, y), 2).repeat_interleave(2, -2).repeat_interleave(2, -1)
    expected = 0.3 * projected / projected.flatten(1).norm(dim=1)[:, None, None, None]
    torch.testing.assert_close(result.perturbation, expected, atol=1e-5, rtol=1e-4)


def test_a_window_over_the_whole_image_searches_as_the_whole_image_does(trained):
    """The searched-grid machinery (z, its window, its embedding) changes nothing when the window is the
    whole image: the same draws give the same images as the plain whole-image search."""
    model, x, y = trained
    plain = square_attack(model, x, y, eps=0.1, n_queries=30, generator=torch.Generator().manual_seed(5))
    window = square_attack(
        model, x, y, eps=0.1, n_queries=30, generator=torch.Generator().manual_seed(5), support=Support((0, 0, 8))
    )
    assert torch.equal(plain.adversarial, window.adversarial) and torch.equal(plain.queries, window.queries)


def test_whole_image_threats_keep_their_identity():
    """Records, profiles and result files written before structured threats name a whole-image threat
    without a support; a structured one names its support and round-trips through JSON-like values."""
    before = {"eps_inf", "n_queries", "p_init", "fgsm", "eps_fgsm", "project_linf"}
    for name in ("paper", "conventional", "reachable"):
        assert set(PRESETS[name].to_dict()) == before
        assert "support" not in str(canonical(PRESETS[name]))
    for name in ("patch", "lowfreq", "nonuniform"):
        values = PRESETS[name].to_dict()
        assert "support" in values
        values["support"]["window"] = list(values["support"]["window"] or []) or None  # as JSON gives it back
        assert AttackConfig.from_dict(values) == PRESETS[name]
    assert canonical(PRESETS["patch"]) != canonical(dataclasses.replace(PRESETS["patch"], support=WHOLE_IMAGE))


@pytest.mark.parametrize(
    ("support", "shape", "message"),
    [
        (dict(window=(6, 6, 4)), (3, 8, 8), "does not fit"),
        (dict(grid=3), (3, 8, 8), "cannot be cut"),
        (dict(outside=0.5), None, "needs a window"),
        (dict(window=(0, 0, 4), outside=1.0), None, "[0, 1)"),
        (dict(window=(0, 0, 3), grid=2), None, "multiple of the grid"),
        (dict(grid=0), None, "grid must be an integer"),
        (dict(window=(0, 0)), None, "(top, left, side)"),
    ],
)
def test_bad_supports_are_refused(support, shape, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        built = Support(**support)
        built.z_shape(*shape)


def test_the_cli_overrides_the_support():
    parser = argparse.ArgumentParser()
    add_attack_options(parser)
    assert attack_config(parser.parse_args(["--preset", "patch"])) == PRESETS["patch"]
    whole = attack_config(parser.parse_args(["--preset", "patch", "--window", "none"]))
    assert whole.support == WHOLE_IMAGE and whole.eps_inf == PRESETS["patch"].eps_inf
    moved = attack_config(parser.parse_args(["--preset", "reachable", "--window", "0,0,8", "--grid", "2"]))
    assert moved.support == Support(window=(0, 0, 8), grid=2)
    with pytest.raises(SystemExit):
        parser.parse_args(["--window", "1,2"])
