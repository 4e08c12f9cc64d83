"""Noise drawn where the model runs (generator_for) and models run in their fastest layout (layout rule)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from dsmooth_core import IsotropicGaussian, Laplace, LowRankCovariance, certify
from dsmooth_core.device import generator_for
from dsmooth_core.layout import in_fastest_layout, in_layout, input_format, preferred_format
from dsmooth_core.models import DEFAULT_MODEL, load_model, load_user_model
from dsmooth_core.noise import AnisotropicGaussian, make_noise
from tests.oracles import anisotropic_perturbations


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class DenseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


# ---------------------------------------------------------------- generator on the model's device
def test_generator_for_a_cpu_model_is_on_the_cpu_and_draws_as_before() -> None:
    generator = generator_for(ConvNet(), 11)
    assert generator.device == torch.device("cpu")
    # a CPU run keeps the noise it always drew: the same stream as torch.Generator().manual_seed(seed)
    assert torch.equal(
        torch.randn(50, generator=generator), torch.randn(50, generator=torch.Generator().manual_seed(11))
    )
    assert generator_for("cpu", 3).initial_seed() == 3


# ---------------------------------------------------------------- the layout rule
def test_layout_rule_prefers_channels_last_for_conv_nets_on_cpu_and_cuda() -> None:
    assert preferred_format(ConvNet(), "cpu") == torch.channels_last
    assert preferred_format(ConvNet(), "cuda") == torch.channels_last
    assert preferred_format(ConvNet(), "mps") == torch.contiguous_format  # not measured there
    assert preferred_format(DenseNet(), "cpu") == torch.contiguous_format  # nothing to gain without convolutions
    scripted = torch.jit.trace(ConvNet().eval(), torch.rand(1, 3, 8, 8))
    assert preferred_format(scripted, "cpu") == torch.contiguous_format  # programs keep their saved layout


def test_in_fastest_layout_converts_weights_and_input_format_reads_them() -> None:
    model = ConvNet()
    assert input_format(model) == torch.contiguous_format
    in_fastest_layout(model)
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.conv.weight.is_contiguous()
    assert input_format(model) == torch.channels_last
    assert input_format(in_fastest_layout(DenseNet())) == torch.contiguous_format


def test_in_layout_keeps_the_values() -> None:
    batch = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    converted = in_layout(batch, torch.channels_last)
    assert converted.is_contiguous(memory_format=torch.channels_last) and not converted.is_contiguous()
    assert torch.equal(converted, batch)


def test_models_the_lab_loads_run_in_channels_last_on_cpu() -> None:
    model = load_model(DEFAULT_MODEL, "cpu", pretrained=False)
    assert input_format(model) == torch.channels_last
    buffer = io.BytesIO()
    torch.save(model.net.state_dict(), buffer)
    upload = load_user_model(buffer.getvalue(), architecture="resnet20")
    assert input_format(upload) == torch.channels_last
    # the weights hash does not depend on the layout, so records and profiles keep matching
    contiguous = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    assert upload.info.weights_hash == model.info.weights_hash
    assert input_format(contiguous) == torch.contiguous_format


def test_a_torchscript_upload_keeps_its_layout() -> None:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(ConvNet().eval(), torch.rand(1, 3, 8, 8)), buffer)
    model = load_user_model(buffer.getvalue(), trust_code=True, input_shape=(3, 8, 8))
    assert input_format(model) == torch.contiguous_format


# ---------------------------------------------------------------- same votes in either layout
def _bundled_pair() -> tuple[nn.Module, nn.Module]:
    try:
        fast = load_model(DEFAULT_MODEL, "cpu")
    except Exception:  # the bundled weights are missing: untrained weights still exercise the layouts
        fast = load_model(DEFAULT_MODEL, "cpu", pretrained=False)
    slow = copy.deepcopy(fast).to(memory_format=torch.contiguous_format)
    assert input_format(fast) == torch.channels_last and input_format(slow) == torch.contiguous_format
    return fast, slow


@pytest.mark.slow
@pytest.mark.parametrize("method", ["randsmooth", "lsmooth", "dsmooth"])
def test_contiguous_and_channels_last_give_the_same_certificate(method: str) -> None:
    fast, slow = _bundled_pair()
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4))
    covariance = None
    if method == "dsmooth":
        covariance = LowRankCovariance.fit(anisotropic_perturbations(200, (3, 32, 32), seed=2).float() * 0.1, k=8)
    noise = make_noise(method, 0.12, covariance)
    n0, n = 50, 400
    certs = [certify(m, x, noise, n0, n, 0.001, 150, generator_for(m, 9)) for m in (fast, slow)]
    for part in ("counts_selection", "counts_estimation"):
        a, b = (torch.tensor(getattr(c, part)) for c in certs)
        assert int((a - b).abs().sum()) <= 2 * 3, f"{part}: {a.tolist()} vs {b.tolist()}"  # a few near-ties at most
    assert certs[0].prediction == certs[1].prediction
    assert certs[0].radius == pytest.approx(certs[1].radius, rel=0.01)


# ---------------------------------------------------------------- CUDA: every draw on the GPU
def cuda(test):
    """Mark a CUDA-only test: selected by ``pytest -m cuda``, skipped without a CUDA device."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


@pytest.fixture
def draws_on(monkeypatch: pytest.MonkeyPatch) -> list[torch.device]:
    """Record the device of every torch.randn / torch.rand result while the test runs."""
    devices: list[torch.device] = []
    for name in ("randn", "rand"):
        original = getattr(torch, name)

        def recording(*args, _original=original, **kwargs):
            out = _original(*args, **kwargs)
            devices.append(out.device)
            return out

        monkeypatch.setattr(torch, name, recording)
    return devices


@cuda
@pytest.mark.parametrize("method", ["randsmooth", "lsmooth", "dsmooth"])
def test_every_noise_draw_is_made_on_the_gpu(method: str, draws_on: list[torch.device]) -> None:
    from tests.oracles import LinearClassifier

    shape = (3, 4, 4)
    covariance = LowRankCovariance.fit(anisotropic_perturbations(300, shape, seed=1), k=6)
    noise = make_noise(method, 0.5, covariance)
    w = torch.ones(shape, dtype=torch.float64)
    model = LinearClassifier(w, 0.0).to("cuda")
    x = torch.full(shape, 0.5)
    generator = generator_for(model, 0)
    assert generator.device.type == "cuda"
    draws_on.clear()
    cert = certify(model, x, noise, 50, 2000, 0.01, 500, generator)
    assert draws_on, "no draws were recorded: the patch did not take"
    assert all(d.type == "cuda" for d in draws_on), f"host draws: {[d for d in draws_on if d.type != 'cuda']}"
    assert cert.prediction == 1


@cuda
@pytest.mark.parametrize("method", ["randsmooth", "lsmooth", "dsmooth"])
def test_gpu_certificates_match_the_oracles(method: str) -> None:
    """The closed-form radii of tests/test_oracles.py, with model, generator and draws on the GPU."""
    import math

    import numpy as np

    from tests.oracles import LinearClassifier, dense_normalized

    shape, sigma, alpha, repeats = (3, 4, 4), 0.5, 0.01, 100
    g = torch.Generator().manual_seed(7)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    if method == "randsmooth":
        b = float((w * x).sum()) - 0.6 * float(w.norm())
        model, noise, exact = LinearClassifier(w, b), IsotropicGaussian(sigma), 0.6
    elif method == "dsmooth":
        covariance = LowRankCovariance.fit(anisotropic_perturbations(300, shape, seed=1), k=6)
        wv = w.flatten().numpy()
        b = float(wv @ x.flatten().numpy()) - 0.6 * math.sqrt(float(wv @ dense_normalized(covariance) @ wv))
        model, noise, exact = LinearClassifier(w, b), AnisotropicGaussian(sigma, covariance), 0.6
    else:
        x = torch.full(shape, 0.5, dtype=torch.float64)
        x[0, 0, 0] = 0.8
        first_pixel = torch.zeros(shape, dtype=torch.float64)
        first_pixel[0, 0, 0] = 1.0  # [x_0 > 0.3], the exact l1 distance to whose boundary is x_0 - 0.3
        model, noise, exact = LinearClassifier(first_pixel, 0.3), Laplace(0.3), 0.5
    model = model.to("cuda")
    radii = []
    for seed in range(repeats):
        cert = certify(model, x.float(), noise, 50, 3000, alpha, 1000, generator_for("cuda", seed))
        radii.append(cert.radius if cert.prediction == 1 else 0.0)
    radii = np.array(radii)
    assert np.mean(radii < exact) >= 1 - alpha * 3  # at most alpha of the radii may overshoot (slack for 100 runs)
    assert np.median(radii) == pytest.approx(exact, rel=0.12)
