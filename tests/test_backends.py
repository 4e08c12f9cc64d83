"""The ONNX Runtime backend: same certificates as torch, a cache no other model can hit, a checked graph.

Votes on the two backends come from the same noise draws, so they can only differ where a noisy
input sits on a float near-tie between two classes (logits equal to ~1e-6, the graph's rounding):
rare, so the counts may differ by at most ``VOTE_SLACK`` votes per class and the radii by 1%.
"""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch
from PIL import Image
from torch import nn

from dsmooth_core import LowRankCovariance, backends, certify
from dsmooth_core.backends import OnnxForward, inference_model, onnx_graph
from dsmooth_core.backends.onnx_graph import graph_key, graph_path
from dsmooth_core.backends.throughput import affordable_n, forward_rate
from dsmooth_core.bundled import GALLERY
from dsmooth_core.cli import main
from dsmooth_core.cli.backend_options import with_backend
from dsmooth_core.device import model_device
from dsmooth_core.errors import InputRefused
from dsmooth_core.layout import input_format
from dsmooth_core.models import ModelInfo, load_model, prepare_image, wrap
from dsmooth_core.models.user import load_user_model
from dsmooth_core.noise import make_noise
from tests.fakedata import write_fake_cifar10
from tests.user_models import export_bytes, torchscript_bytes

VOTE_SLACK = 2  # votes per class, of n, that float near-ties may move
SHAPE = (3, 8, 8)
CLASSES = tuple(f"c{i}" for i in range(10))


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """One graph cache for the module's tests (so the ResNet-20 export is paid once), never the user's."""
    folder = tmp_path_factory.getbasetemp() / "onnx_cache"
    monkeypatch.setenv(onnx_graph.CACHE_ENV, str(folder))
    monkeypatch.setattr(backends, "_CHECKED", {})  # each test starts from the disk cache
    return folder / "onnx"


def tiny(seed: int = 0, mean: tuple[float, ...] = (0.5, 0.5, 0.5), shape: tuple[int, int, int] = SHAPE) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(shape[0], 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 10)
    )
    return wrap(net, ModelInfo("tiny", "toy", shape, CLASSES, "test", mean=mean, std=(0.25,) * 3))


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


@pytest.mark.slow
def test_certificates_equal_on_both_backends() -> None:
    model = load_model("bundled-resnet20", "cpu")
    fast, note = inference_model(model, "onnxruntime")
    assert isinstance(fast, OnnxForward), note
    x = prepare_image(Image.open(GALLERY / "cat_chelsea.png"), model.info)
    g = torch.Generator().manual_seed(0)
    covariance = LowRankCovariance.fit(0.1 * torch.randn(64, *model.info.input_shape, generator=g), k=8)
    for method in ("randsmooth", "lsmooth", "dsmooth"):
        noise = make_noise(method, 0.25, covariance)
        slow_cert, fast_cert = (
            certify(m, x, noise, 20, 200, 0.001, 110, torch.Generator().manual_seed(7)) for m in (model, fast)
        )
        assert slow_cert.prediction == fast_cert.prediction, method
        for a, b in (
            (slow_cert.counts_selection, fast_cert.counts_selection),
            (slow_cert.counts_estimation, fast_cert.counts_estimation),
        ):
            assert max(abs(i - j) for i, j in zip(a, b, strict=True)) <= VOTE_SLACK, (method, a, b)
        assert fast_cert.radius == pytest.approx(slow_cert.radius, rel=0.01), method
        assert slow_cert.radius > 0, f"{method}: the test needs a certified image to compare radii"


def test_cache_key_follows_weights_normalization_and_shape() -> None:
    base = tiny()
    assert graph_key(base, SHAPE) == graph_key(tiny(), SHAPE)  # the same model finds its graph again
    assert graph_key(tiny(seed=1), SHAPE) != graph_key(base, SHAPE)
    assert graph_key(tiny(mean=(0.4, 0.5, 0.5)), SHAPE) != graph_key(base, SHAPE)
    assert graph_key(base, (3, 16, 16)) != graph_key(base, SHAPE)
    changed = tiny()
    with torch.no_grad():  # weights loaded after wrap: ModelInfo still names the old ones, the key must not
        changed.net[0].bias.add_(0.1)
    assert changed.info.identity == base.info.identity
    assert graph_key(changed, SHAPE) != graph_key(base, SHAPE)


def test_other_weights_never_reuse_a_graph(cache) -> None:
    first, _ = inference_model(tiny(), "onnxruntime")
    other = tiny()
    with torch.no_grad():
        other.net[-1].weight.mul_(-1)
    second, note = inference_model(other, "onnxruntime")
    assert isinstance(second, OnnxForward) and "exported" in note
    assert len(list(cache.glob("*.onnx"))) >= 2
    x = torch.rand(5, *SHAPE)
    assert torch.allclose(logits(second, x), logits(other, x), atol=1e-5)
    assert not torch.allclose(logits(first, x), logits(second, x), atol=1e-3)
    backends._CHECKED.clear()  # as another process would: read from the disk cache and probed
    again, note = inference_model(tiny(), "onnxruntime")
    assert "graph from" in note and torch.allclose(logits(again, x), logits(first, x))


def test_a_process_checks_a_graph_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny(seed=3)
    first, _ = inference_model(model, "onnxruntime")

    def no_second_probe(*args: object) -> str:
        raise AssertionError("probed again")

    monkeypatch.setattr("dsmooth_core.backends.check_agreement", no_second_probe)
    again, _ = inference_model(tiny(seed=3), "onnxruntime")  # the same function: the graph checked before
    assert isinstance(again, OnnxForward) and again.graph == first.graph


@torch.library.custom_op("dsmooth_tests::wobble", mutates_args=())
def wobble(x: torch.Tensor) -> torch.Tensor:
    """A custom op with no ONNX translation, as a research model's own CUDA/C++ kernel would be."""
    return torch.tanh(x) + 0.1 * x


@wobble.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class CustomOpHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return wobble(self.conv(x).mean(dim=(2, 3)))


def test_an_unexportable_model_stays_on_torch_with_a_note() -> None:
    model = wrap(CustomOpHead(), ModelInfo("custom op", "toy", SHAPE, CLASSES, "test"))
    used, note = inference_model(model, "onnxruntime")
    assert used is model
    assert note.startswith("note: model 'custom op' cannot run on onnxruntime: torch.onnx could not export it")
    assert note.endswith("using torch")
    again, note = inference_model(model, "onnxruntime")  # the refusal is remembered: no second export
    assert again is model and "remembered in" in note
    cert = certify(used, torch.rand(SHAPE), make_noise("randsmooth", 0.25), 10, 50, 0.01, 30, torch.Generator())
    assert cert.n == 50


def test_a_torchscript_upload_is_exported_or_kept_on_torch() -> None:
    model = load_user_model(torchscript_bytes(), trust_code=True, name="script")
    used, note = inference_model(model, "onnxruntime")
    x = torch.rand(4, *model.info.input_shape)
    assert torch.allclose(logits(used, x), logits(model, x), atol=1e-4), note
    assert isinstance(used, OnnxForward) or "using torch" in note


def test_a_graph_with_other_logits_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    impostor = tiny(seed=5)
    real_export = onnx_graph.export_graph
    monkeypatch.setattr("dsmooth_core.backends.export_graph", lambda model, shape: real_export(impostor, shape))
    model = tiny(seed=6)
    used, note = inference_model(model, "onnxruntime")
    assert used is model
    assert "differ from torch's" in note and "using torch" in note


def test_a_damaged_cached_graph_is_exported_again() -> None:
    model = tiny(seed=7)
    inference_model(model, "onnxruntime")
    path = graph_path(model, SHAPE)
    other, _ = inference_model(tiny(seed=8), "onnxruntime")
    path.write_bytes(other.graph)  # another model's valid graph under this model's key
    backends._CHECKED.clear()
    used, note = inference_model(model, "onnxruntime")
    assert isinstance(used, OnnxForward) and "replaced a cached graph" in note
    x = torch.rand(3, *SHAPE)
    assert torch.allclose(logits(used, x), logits(model, x), atol=1e-5)
    path.write_bytes(b"not a graph")
    backends._CHECKED.clear()
    used, note = inference_model(model, "onnxruntime")
    assert isinstance(used, OnnxForward) and "replaced a cached graph" in note


def test_gradients_pickling_and_threads() -> None:
    model = tiny(seed=9)
    fast, _ = inference_model(model, "onnxruntime", threads=None)
    x = torch.rand(2, *SHAPE, requires_grad=True)
    (grad,) = torch.autograd.grad(fast(x).sum(), x)  # gradient calls run the torch model
    assert grad.abs().sum() > 0
    copy = pickle.loads(pickle.dumps(fast))  # as a Ray worker receives it
    assert torch.allclose(logits(copy, x.detach()), logits(model, x.detach()), atol=1e-5)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert fast.session().get_session_options().intra_op_num_threads == 1
        assert copy.session() is fast.session()  # one warm session per graph and thread count in a process
    finally:
        torch.set_num_threads(before)
    pinned, _ = inference_model(model, "onnxruntime", threads=2)
    assert pinned.session().get_session_options().intra_op_num_threads == 2
    assert fast.to("cpu") is fast and fast.to("meta") is model  # a GPU worker gets the torch model, moved


def test_the_wrapper_runs_in_eval_mode_and_takes_contiguous_batches() -> None:
    torch.manual_seed(11)
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.Dropout(0.5), nn.Linear(32, 10))
    model = wrap(net, ModelInfo("dropout", "toy", SHAPE, CLASSES, "test")).train()
    fast, note = inference_model(model, "onnxruntime")
    assert isinstance(fast, OnnxForward), note
    assert model.training  # the caller's modes are given back after the export and the probe
    x = torch.rand(4, *SHAPE, requires_grad=True)
    with torch.no_grad():
        expected = model.eval()(x)
    model.train()
    assert torch.allclose(fast(x), expected)  # the torch path (gradients on) runs in eval mode too
    assert input_format(fast) == torch.contiguous_format and model_device(fast).type == "cpu"


def test_backend_choice_and_the_command_option() -> None:
    model = tiny(seed=10)
    assert inference_model(model, "torch")[0] is model
    fast = inference_model(model, "onnxruntime")[0]
    assert inference_model(fast, "auto")[0] is fast and inference_model(fast, "torch")[0] is model
    assert isinstance(inference_model(model, "auto")[0], OnnxForward)  # auto: onnxruntime on a CPU
    with pytest.raises(ValueError, match="backend must be one of"):
        inference_model(model, "tensorrt")
    with pytest.raises(InputRefused, match="--compile"):
        with_backend(model, argparse.Namespace(backend="onnxruntime", compile=True))
    assert with_backend(model, argparse.Namespace(backend="auto", compile=True)) is model


CERTIFY = ["certify", "--n0", "10", "--n", "100", "--batch", "50", "--skip", "7", "--max", "2", "--device", "cpu"]
PROGRAM = ["--trust-code", "--classes", "cifar10", "--input-size", "3,32,32"]


def test_the_certify_command_on_both_backends(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=2)))
    program = tmp_path / "net.pt2"
    program.write_bytes(export_bytes())
    rows = {}
    for backend in ("onnxruntime", "torch"):
        out = tmp_path / f"{backend}.tsv"
        assert main([*CERTIFY, "--model-file", str(program), *PROGRAM, "--backend", backend, "--out", str(out)]) == 0
        assert capsys.readouterr().out.startswith(f"forward: {backend}")  # stdout: nothing to act on
        rows[backend] = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    for fast, slow in zip(rows["onnxruntime"], rows["torch"], strict=True):
        assert fast[:3] == slow[:3]  # idx, label, prediction
        assert float(fast[3]) == pytest.approx(float(slow[3]), rel=0.01)


def test_the_affordable_n_follows_the_measured_rate() -> None:
    assert affordable_n(2000.0, seconds=5.0, methods=3, n0=100) == 2900  # 3 x (100 + 2900) draws at 0.9 x 2000/s
    assert affordable_n(100.0, seconds=1.0) == 0
    fast, _ = inference_model(tiny(seed=12), "onnxruntime")
    assert forward_rate(fast, batch=20) > 0 and forward_rate(tiny(seed=12), batch=20) > 0
