"""The optional compiled forward: only full batches go through the compiled graph, results unchanged."""

from __future__ import annotations

import pytest
import torch

from dsmooth_core import IsotropicGaussian, certify
from dsmooth_core import compiled as compiled_module
from dsmooth_core.device import generator_for
from dsmooth_core.models import DEFAULT_MODEL, load_model


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replace torch.compile by a recorder (a real compile takes over a minute on this CPU)."""
    seen: list[int] = []

    def fake_compile(model, dynamic=None):
        assert dynamic is False  # one static graph for the one stable batch size

        def run(x):
            seen.append(x.shape[0])
            return model(x)

        return run

    monkeypatch.setattr(compiled_module.torch, "compile", fake_compile)
    return seen


def test_only_full_batches_use_the_compiled_graph(calls: list[int]) -> None:
    model = load_model(DEFAULT_MODEL, "cpu", pretrained=False)
    wrapped = compiled_module.compiled_forward(model, 64)
    assert wrapped.info is model.info
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    noise = IsotropicGaussian(0.25)
    cert = certify(wrapped, x, noise, 20, 200, 0.001, 64, generator_for(wrapped, 3))
    assert calls == [64, 64, 64]  # probes (2, 3), n0 = 20 and the last 8 draws ran eagerly
    reference = certify(model, x, noise, 20, 200, 0.001, 64, generator_for(model, 3))
    assert (cert.counts_selection, cert.counts_estimation) == (reference.counts_selection, reference.counts_estimation)
    assert cert.radius == reference.radius


def test_gradients_and_bad_sizes_stay_eager(calls: list[int]) -> None:
    model = load_model(DEFAULT_MODEL, "cpu", pretrained=False)
    wrapped = compiled_module.compiled_forward(model, 4)
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    wrapped(x).sum().backward()  # an attack's gradient never goes through the inference graph
    assert calls == [] and x.grad is not None
    with pytest.raises(ValueError, match="batch_size"):
        compiled_module.compiled_forward(model, 0)


def test_certify_cli_compile_flag_compiles_the_full_batches(calls: list[int], tmp_path, monkeypatch) -> None:
    from dsmooth_core.cli import main
    from tests.fakedata import write_fake_cifar10

    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=1)))
    args = ["certify", "--model", "cifar10_resnet20", "--untrained", "--n0", "5", "--n", "20", "--batch", "10"]
    args += ["--skip", "5", "--device", "cpu"]
    rows = {}
    for flag in ([], ["--compile"]):
        out = tmp_path / f"rows{len(flag)}.tsv"
        assert main([*args, *flag, "--out", str(out)]) == 0
        rows[bool(flag)] = [line.split("\t")[:5] for line in out.read_text().splitlines()]
    assert calls and set(calls) == {10}  # only the full batches of --batch went through torch.compile
    assert rows[True] == rows[False] and len(rows[True]) == 3  # header and two images
