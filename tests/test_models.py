"""dsmooth_core.models: architectures, normalisation, registry, offline behaviour and safe user loading."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from PIL import Image
from torch import nn

from dsmooth_core.models import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    DEFAULT_MODEL,
    MODEL_NAMES,
    ModelInfo,
    ModelLoadError,
    ModelUnavailableError,
    Normalized,
    available_models,
    build_architecture,
    cifar_resnet,
    load_model,
    load_user_model,
    prepare_image,
    registry,
    state_dict_hash,
    wrap,
)
from dsmooth_core.models.architectures import CIFAR10_WEIGHT_URLS
from dsmooth_core.models.weights import cache_path

# TorchScript is deprecated upstream but still what many users have; its warnings are expected here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": (() if k == "num_batches_tracked" else (c,)) for k in BN}


def _expected_resnet20_layout() -> dict[str, tuple[int, ...]]:
    """Written out from the published chenyaofo layout, independently of the implementation."""
    layout = {"conv1.weight": (16, 3, 3, 3), **_bn("bn1", 16)}
    c_in = 16
    for stage, width in ((1, 16), (2, 32), (3, 64)):
        for block in range(3):
            p = f"layer{stage}.{block}"
            layout[f"{p}.conv1.weight"] = (width, c_in, 3, 3)
            layout.update(_bn(f"{p}.bn1", width))
            layout[f"{p}.conv2.weight"] = (width, width, 3, 3)
            layout.update(_bn(f"{p}.bn2", width))
            if block == 0 and stage > 1:
                layout[f"{p}.downsample.0.weight"] = (width, c_in, 1, 1)
                layout.update(_bn(f"{p}.downsample.1", width))
            c_in = width
    layout["fc.weight"] = (10, 64)
    layout["fc.bias"] = (10,)
    return layout


def _info(**changes: object) -> ModelInfo:
    fields = dict(name="t", dataset="custom", input_shape=(3, 8, 8), class_names=("a", "b"), source="test")
    fields.update(changes)
    return ModelInfo(**fields)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def _saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache and no network: any download attempt fails at once."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    return tmp_path / "hub"


# --- architectures -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "blocks"), [("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9)])
def test_cifar_resnets_build_and_run(name: str, blocks: int) -> None:
    net = cifar_resnet(name).eval()
    assert [len(net.layer1), len(net.layer2), len(net.layer3)] == [blocks] * 3
    with torch.no_grad():
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_resnet20_matches_published_layout() -> None:
    net = cifar_resnet("resnet20")
    layout = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert layout == _expected_resnet20_layout()
    assert sum(p.numel() for p in net.parameters()) == 272_474


def test_resnet_parameter_counts_match_published_table() -> None:
    published = {"resnet32": 0.47, "resnet44": 0.66, "resnet56": 0.86}  # millions, chenyaofo README
    for name, millions in published.items():
        count = sum(p.numel() for p in cifar_resnet(name).parameters())
        assert round(count / 1e6, 2) == millions


def test_unknown_architecture_is_named() -> None:
    with pytest.raises(ValueError, match="resnet20"):
        build_architecture("resnet21")


# --- normalisation and fingerprint ---------------------------------------------------------------


def test_normalization_happens_inside_the_wrapper() -> None:
    model = Normalized(nn.Identity(), _info(input_shape=(3, 1, 1), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0)))
    pixel = torch.tensor([1.0, 0.5, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(model(pixel).flatten(), torch.tensor([1.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="expected a"):
        model(torch.rand(1, 1, 1, 1))


def test_wrap_gives_frozen_eval_model_with_hash() -> None:
    torch.manual_seed(0)
    net = TinyNet()
    model = wrap(net, _info())
    assert not model.training and not net.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.info.weights_hash == state_dict_hash(net) == state_dict_hash(net.state_dict())
    assert len(model.info.weights_hash) == 64


def test_state_dict_hash_is_deterministic_and_sensitive() -> None:
    torch.manual_seed(1)
    a = TinyNet()
    torch.manual_seed(1)
    b = TinyNet()
    assert state_dict_hash(a) == state_dict_hash(b)
    with torch.no_grad():
        b.fc.bias[0] += 1e-6
    assert state_dict_hash(a) != state_dict_hash(b)


# --- registry ------------------------------------------------------------------------------------


def test_registry_lists_bundled_model_first() -> None:
    specs = available_models()
    assert specs[0].name == DEFAULT_MODEL == MODEL_NAMES[0]
    assert not specs[0].needs_download
    assert [s.name for s in specs] == list(MODEL_NAMES)
    assert {"cifar10_resnet56", "cifar10_repvgg_a2", "imagenet_wide_resnet101_2"} <= set(MODEL_NAMES)
    with pytest.raises(ValueError, match="unknown model"):
        load_model("no-such-model")


def test_untrained_cifar_model_is_ready_for_inference() -> None:
    model = load_model("cifar10_resnet20", pretrained=False)
    assert model.info.class_names == CIFAR10_CLASSES and model.info.source == "untrained"
    assert model.info.mean == (0.4914, 0.4822, 0.4465) and model.info.std == (0.2023, 0.1994, 0.2010)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_untrained_imagenet_model_uses_torchvision_metadata() -> None:
    model = load_model("imagenet_resnet50", pretrained=False)
    info = model.info
    assert info.input_shape == (3, 224, 224) and len(info.class_names) == 1000
    assert info.class_names[0] == "tench" and info.mean == (0.485, 0.456, 0.406)
    assert info.resize_size is not None and info.resize_size >= 224


def test_bundled_model_missing_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "BUNDLED_WEIGHTS", tmp_path / "resnet20_cifar10.pt")
    with pytest.raises(ModelUnavailableError, match=r"not been trained yet.*resnet20_cifar10\.pt"):
        load_model(DEFAULT_MODEL)


def test_bundled_model_loads_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained = cifar_resnet("resnet20")
    path = tmp_path / "resnet20_cifar10.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, path)
    monkeypatch.setattr(registry, "BUNDLED_WEIGHTS", path)
    model = load_model(DEFAULT_MODEL)
    assert model.info.source == "bundled" and model.info.mean == CIFAR10_MEAN
    assert model.info.weights_hash == state_dict_hash(trained)


def test_weights_file_replaces_the_models_own(tmp_path: Path) -> None:
    trained = cifar_resnet("resnet20")
    path = tmp_path / "resnet20_paper_recipe.pt"
    torch.save(trained.state_dict(), path)
    model = load_model(DEFAULT_MODEL, weights=path)
    assert model.info.name == "resnet20_paper_recipe" and model.info.source == "file:resnet20_paper_recipe.pt"
    assert model.info.mean == CIFAR10_MEAN and model.info.weights_hash == state_dict_hash(trained)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        # the loaded model runs in channels_last (dsmooth_core.layout): equal up to float rounding
        assert torch.allclose(model(x), trained.eval()((x - model.mean) / model.std), atol=1e-5)


def test_weights_file_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_model(DEFAULT_MODEL, weights=tmp_path / "missing.pt")
    wrong = tmp_path / "resnet32.pt"
    torch.save(cifar_resnet("resnet32").state_dict(), wrong)
    with pytest.raises(ModelLoadError, match="unexpected keys"):
        load_model(DEFAULT_MODEL, weights=wrong)
    marker = tmp_path / "code-ran"
    planted = tmp_path / "planted.pt"
    planted.write_bytes(_saved({"fc.weight": torch.zeros(1), "payload": _Planted(marker)}))
    with pytest.raises(ModelUnavailableError, match="safely"):
        load_model(DEFAULT_MODEL, weights=planted)
    assert not marker.exists()


def test_offline_hub_weights_fail_fast_with_fix(offline_hub: Path) -> None:
    url = CIFAR10_WEIGHT_URLS["resnet20"]
    with pytest.raises(ModelUnavailableError) as caught:
        load_model("cifar10_resnet20")
    message = str(caught.value)
    assert url in message and str(offline_hub / "checkpoints" / "cifar10_resnet20-4118986f.pt") in message


def test_offline_hub_code_fails_fast(offline_hub: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="chenyaofo/pytorch-cifar-models"):
        load_model("cifar10_vgg11_bn")


def test_cached_weights_load_offline(offline_hub: Path) -> None:
    url = CIFAR10_WEIGHT_URLS["resnet20"]
    published = cifar_resnet("resnet20")
    cache_path(url).parent.mkdir(parents=True)
    torch.save(published.state_dict(), cache_path(url))
    assert not next(s for s in available_models() if s.name == "cifar10_resnet20").needs_download
    model = load_model("cifar10_resnet20")
    assert model.info.source == "hub:chenyaofo/pytorch-cifar-models"
    assert model.info.weights_hash == state_dict_hash(published)


def test_cached_hub_code_and_weights_load_offline(offline_hub: Path) -> None:
    repo = offline_hub / "chenyaofo_pytorch-cifar-models_master"  # where torch.hub unpacks the repo
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(
        "from torch import nn\n"
        "dependencies = ['torch']\n"
        "def cifar10_vgg11_bn(pretrained=False):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))\n"
    )
    weights = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).state_dict()
    target = cache_path(CIFAR10_WEIGHT_URLS["vgg11_bn"])
    target.parent.mkdir(parents=True)
    torch.save(weights, target)
    assert not next(s for s in available_models() if s.name == "cifar10_vgg11_bn").needs_download
    model = load_model("cifar10_vgg11_bn")
    assert model.info.weights_hash == state_dict_hash(weights)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_corrupt_cached_weights_are_reported(offline_hub: Path) -> None:
    target = cache_path(CIFAR10_WEIGHT_URLS["resnet32"])
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="Delete it"):
        load_model("cifar10_resnet32")


# --- preprocessing -------------------------------------------------------------------------------


def test_prepare_image_fits_cifar_and_imagenet_inputs() -> None:
    photo = Image.new("RGB", (500, 375), (255, 0, 0))
    cifar = prepare_image(photo, _info(input_shape=(3, 32, 32)))
    assert cifar.shape == (3, 32, 32) and torch.allclose(cifar[0], torch.ones(32, 32))
    imagenet = prepare_image(photo, _info(input_shape=(3, 224, 224), resize_size=256))
    assert imagenet.shape == (3, 224, 224) and float(imagenet.max()) <= 1.0


def test_prepare_image_crops_the_centre() -> None:
    img = torch.zeros(1, 256, 512)
    img[:, :, 128:384] = 1.0  # only the middle half is bright
    out = prepare_image(img, _info(input_shape=(1, 224, 224), mean=(0.0,), std=(1.0,), resize_size=256))
    assert out.shape == (1, 224, 224) and torch.all(out == 1.0)


# --- user models ---------------------------------------------------------------------------------


def test_user_state_dict_loads_for_its_architecture(tmp_path: Path) -> None:
    trained = cifar_resnet("resnet20")
    path = tmp_path / "mine.pt"
    torch.save({"model_state_dict": trained.state_dict(), "epoch": 3}, path)
    model = load_user_model(path, architecture="resnet20")
    assert model.info.source == "upload" and model.info.dataset == "cifar10"
    assert model.info.class_names == CIFAR10_CLASSES and model.info.mean == (0.0, 0.0, 0.0)
    assert model.info.weights_hash == state_dict_hash(trained)


def test_user_state_dict_for_wrong_architecture_lists_keys() -> None:
    data = _saved(cifar_resnet("resnet20").state_dict())
    with pytest.raises(ModelLoadError, match=r"does not match resnet32: missing keys: layer1\.3\."):
        load_user_model(data, architecture="resnet32")
    with pytest.raises(ModelLoadError, match=r"unexpected keys: layer1\.3\."):
        load_user_model(_saved(cifar_resnet("resnet32").state_dict()), architecture="resnet20")
    with pytest.raises(ModelLoadError, match=r"shape mismatches.*fc\.weight \(100, 64\) vs \(10, 64\)"):
        load_user_model(_saved(cifar_resnet("resnet20", num_classes=100).state_dict()), architecture="resnet20")


def test_user_state_dict_needs_an_architecture() -> None:
    with pytest.raises(ModelLoadError, match="choose the architecture"):
        load_user_model(_saved(cifar_resnet("resnet20").state_dict()))


def test_random_bytes_are_not_a_model() -> None:
    with pytest.raises(ModelLoadError, match=r"not a TorchScript, torch\.export or state-dict file"):
        load_user_model(bytes(range(256)) * 8, architecture="resnet20")


class _Planted:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("container", ["pickle", "torch.save"])
def test_code_running_pickle_is_refused(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "code-ran"
    planted = {"fc.weight": torch.zeros(1), "payload": _Planted(marker)}
    data = pickle.dumps(planted) if container == "pickle" else _saved(planted)
    with pytest.raises(ModelLoadError, match="Refused"):
        load_user_model(data, architecture="resnet20")
    assert not marker.exists()


def test_torchscript_round_trip_requires_trust() -> None:
    torch.manual_seed(0)
    net = TinyNet().eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(net, torch.rand(1, 3, 32, 32)), buffer)
    with pytest.raises(ModelLoadError, match="TorchScript file"):
        load_user_model(buffer.getvalue())
    model = load_user_model(buffer.getvalue(), trust_code=True, class_names=("x", "y", "z"))
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(model(x), net(x), atol=1e-6)
    assert model.info.class_names == ("x", "y", "z") and model.info.dataset == "custom"


def test_torch_export_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TinyNet().eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.rand(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    path = tmp_path / "net.pt2"
    torch.export.save(program, path)
    with pytest.raises(ModelLoadError, match=r"torch\.export file"):
        load_user_model(path)
    model = load_user_model(path, trust_code=True)
    assert model.info.input_shape == (3, 16, 16)  # taken from the program's example input
    assert model.info.class_names == ("class 0", "class 1", "class 2")
    assert not model.training
    x = torch.rand(5, 3, 16, 16)
    assert torch.allclose(model(x), net(x), atol=1e-5)


def test_model_with_wrong_output_is_rejected() -> None:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(nn.Identity()), buffer)  # returns images, not logits
    with pytest.raises(ModelLoadError, match=r"logits of shape .* returned \(2, 3, 32, 32\)"):
        load_user_model(buffer.getvalue(), trust_code=True)
