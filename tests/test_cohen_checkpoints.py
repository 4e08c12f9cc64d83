"""Cohen et al.'s checkpoint format (locuslab/smoothing) loads through the API, --model-file and the app's upload.

The files are built here as their train.py would save them: ``nn.Sequential(NormalizeLayer, net)``
with the net random but seeded, saved as ``{"epoch", "arch", "state_dict", "optimizer"}``. The CIFAR
ResNet is restated in this file from their description (bearpaw's ResNet), not taken from
``dsmooth_core``, so the key names and the forward pass are checked against theirs, not ours.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from dsmooth_core.cli import build_parser, main
from dsmooth_core.cli.model_file_options import load_model_file_arg
from dsmooth_core.layout import in_fastest_layout
from dsmooth_core.models import CIFAR10_CLASSES, ModelLoadError, load_user_model, state_dict_hash
from dsmooth_core.models.model_file import ModelFileOptions, cohen_statement, load_model_file
from dsmooth_lab_ui import nav, state
from tests.fakedata import write_fake_cifar10

APP = Path(__file__).resolve().parents[1] / "app.py"

# The statistics of their datasets.py, written out again so the loader's own copy is checked.
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SUPPORTED = "cifar_resnet20, cifar_resnet110, resnet50"


class NormalizeLayer(nn.Module):
    """Their first layer: the statistics are plain attributes, so the saved state dict has none of them."""

    def __init__(self, means: tuple[float, ...], sds: tuple[float, ...]) -> None:
        super().__init__()
        self.means = torch.tensor(means).view(1, -1, 1, 1)
        self.sds = torch.tensor(sds).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.means) / self.sds


class PaperBlock(nn.Module):
    """Two 3x3 conv+BN, ReLU between; the shortcut is ``downsample(x)`` when given, added before the last ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class PaperCifarResNet(nn.Module):
    """depth = 6n + 2: conv 3->16, stages of n blocks at 16/32/64 channels, AvgPool2d(8), linear."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        blocks = (depth - 2) // 6
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(16, blocks, 1)
        self.layer2 = self._make_layer(32, blocks, 2)
        self.layer3 = self._make_layer(64, blocks, 2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, 10)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [PaperBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [PaperBlock(planes, planes, 1, None) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
        return self.fc(self.avgpool(x).view(x.size(0), -1))


def _bare_net(arch: str) -> nn.Module:
    if arch == "resnet50":
        import torchvision

        return torchvision.models.resnet50(weights=None)
    return PaperCifarResNet({"cifar_resnet20": 20, "cifar_resnet110": 110}[arch])


def _pixels(shape: tuple[int, ...], count: int = 2, seed: int = 2) -> torch.Tensor:
    """Smooth random images in [0, 1]: unlike pixel noise, they keep apart after the nets' global pooling."""
    coarse = torch.rand((count, shape[0], 4, 4), generator=torch.Generator().manual_seed(seed))
    return nn.functional.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=False)


def _trained_look(model: nn.Module, images: torch.Tensor) -> None:
    """Random BatchNorm scales and shifts, then statistics measured on ``images``, as training leaves them.

    The net's outputs then depend on its input as a trained net's do, so a normalization or a
    BatchNorm buffer that the loader got wrong changes them by far more than the tolerance.
    """
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.copy_(0.5 + torch.rand(module.num_features, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.num_features, generator=generator))
            module.reset_running_stats()
            module.momentum = None  # the running statistics become those of the one batch below
    model.train()
    with torch.no_grad():
        model(images)


def cohen_model(arch: str, parallel: bool = False) -> tuple[nn.Sequential, torch.optim.Optimizer]:
    """Their ``get_architecture``: the net (in DataParallel if asked) behind the data set's NormalizeLayer."""
    torch.manual_seed(0)
    net = _bare_net(arch)
    imagenet = arch == "resnet50"
    model = nn.Sequential(
        NormalizeLayer(IMAGENET_MEAN if imagenet else CIFAR_MEAN, IMAGENET_STD if imagenet else CIFAR_STD),
        nn.DataParallel(net) if parallel else net,
    )
    shape = (3, 64, 64) if imagenet else (3, 32, 32)  # small ImageNet images keep the step fast
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    # one training step, so the optimizer entry holds momentum tensors as in a real checkpoint
    model.train()
    nn.functional.cross_entropy(model(_pixels(shape)), torch.arange(2)).backward()
    optimizer.step()
    _trained_look(model, _pixels(shape, 8, seed=3))
    return model.eval(), optimizer


def checkpoint_bytes(arch: str, model: nn.Sequential, optimizer: torch.optim.Optimizer, legacy: bool = False) -> bytes:
    """Their train.py's save; ``legacy`` writes PyTorch's pre-1.6 format, which their 2019 files have."""
    checkpoint = {"epoch": 90, "arch": arch, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def _same_outputs(loaded: nn.Module, original: nn.Module, shape: tuple[int, ...]) -> None:
    """Equal logits on [0, 1] pixels. The original runs in the memory layout the lab gives every conv net
    (``in_fastest_layout``), whose kernels sum in another order: up to 4e-5 apart on ResNet-50 otherwise."""
    x = _pixels(shape)
    in_fastest_layout(original)
    with torch.no_grad():
        expected, got = original(x), loaded(x)
    assert (expected[0] - expected[1]).abs().max() > 0.01  # outputs that depend on the input
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def _cli_args(path: Path, *extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["certify", "--model-file", str(path), "--out", "cert.tsv", *extra])


@pytest.fixture(scope="module")
def resnet20_file(tmp_path_factory) -> tuple[Path, nn.Sequential]:
    model, optimizer = cohen_model("cifar_resnet20")
    path = tmp_path_factory.mktemp("cohen") / "checkpoint.pth.tar"
    path.write_bytes(checkpoint_bytes("cifar_resnet20", model, optimizer))
    return path, model


@pytest.mark.parametrize(
    ("arch", "parallel", "legacy"),
    [
        ("cifar_resnet20", False, False),
        ("cifar_resnet20", True, True),
        pytest.param("cifar_resnet110", False, False, marks=pytest.mark.slow),
    ],
)
def test_cifar_checkpoints_load_through_api_and_cli_with_the_original_outputs(tmp_path, arch, parallel, legacy):
    model, optimizer = cohen_model(arch, parallel)
    path = tmp_path / "checkpoint.pth.tar"
    path.write_bytes(checkpoint_bytes(arch, model, optimizer, legacy))
    assert next(iter(model.state_dict())).startswith("1.module." if parallel else "1.conv1")
    api = load_user_model(path)
    cli = load_model_file_arg(_cli_args(path), torch.device("cpu"))
    bare = model[1].module if parallel else model[1]
    for loaded in (api, cli):
        _same_outputs(loaded, model, (3, 32, 32))
        info = loaded.info
        assert (info.dataset, info.input_shape, info.class_names) == ("cifar10", (3, 32, 32), CIFAR10_CLASSES)
        assert (info.mean, info.std, info.resize_size) == (CIFAR_MEAN, CIFAR_STD, None)
        assert info.weights_hash == state_dict_hash(bare)
    assert api.info.source == f"cohen:{arch}"
    assert cli.info.source.startswith(f"cohen:{arch} file:checkpoint.pth.tar sha256:")


@pytest.mark.slow
def test_imagenet_resnet50_with_dataparallel_prefix(tmp_path):
    model, optimizer = cohen_model("resnet50", parallel=True)
    path = tmp_path / "checkpoint.pth.tar"
    path.write_bytes(checkpoint_bytes("resnet50", model, optimizer))
    assert "1.module.conv1.weight" in model.state_dict()
    for loaded in (load_user_model(path), load_model_file_arg(_cli_args(path), torch.device("cpu"))):
        _same_outputs(loaded, model, (3, 224, 224))
        info = loaded.info
        assert (info.dataset, info.input_shape, info.resize_size) == ("imagenet", (3, 224, 224), 256)
        assert (info.mean, info.std) == (IMAGENET_MEAN, IMAGENET_STD)
        assert len(info.class_names) == 1000 and info.class_names[0] == "tench"
        assert info.weights_hash == state_dict_hash(model[1].module)
    assert cohen_statement(path).arch == "resnet50"


def test_cli_certifies_with_a_cohen_checkpoint(resnet20_file, tmp_path, monkeypatch):
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=2)))
    out = tmp_path / "cert.tsv"
    argv = ["certify", "--n0", "5", "--n", "20", "--batch", "10", "--max", "1", "--device", "cpu"]
    assert main([*argv, "--model-file", str(resnet20_file[0]), "--out", str(out)]) == 0
    with out.open(newline="") as f:
        (row,) = list(csv.DictReader(f, delimiter="\t"))
    assert row["metric"] == "l2" and int(row["predict"]) in range(-1, 10)


def test_statements_may_repeat_the_checkpoint_but_not_contradict_it(resnet20_file):
    path, model = resnet20_file
    same = ModelFileOptions(
        input_size="3,32,32", classes="cifar10", normalization="0.4914,0.4822,0.4465/0.2023,0.1994,0.2010"
    )
    _same_outputs(load_model_file(path, same, name=path.name), model, (3, 32, 32))
    for options, given in [
        (ModelFileOptions(normalization="cifar10"), "normalization mean (0.4913"),
        (ModelFileOptions(input_size="3,64,64"), "input size (3, 64, 64)"),
        (ModelFileOptions(classes="a,b"), "2 other class names"),
    ]:
        with pytest.raises(ModelLoadError, match="states itself; leave out what contradicts it") as refused:
            load_model_file(path, options, name=path.name)
        assert given in str(refused.value)


def _refusal(data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The one-line message of the API, after checking the CLI refuses the same file with it (exit 2)."""
    path = tmp_path / "checkpoint.pth.tar"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError) as refused:
        load_user_model(path)
    message = str(refused.value)
    assert "\n" not in message
    with pytest.raises(SystemExit) as exit_info:
        main(["certify", "--model-file", str(path), "--device", "cpu", "--out", str(tmp_path / "cert.tsv")])
    assert exit_info.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"
    return message


def _saved(checkpoint: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def test_wrong_arch_truncated_file_and_missing_keys_are_refused(tmp_path, capsys):
    model, optimizer = cohen_model("cifar_resnet20")
    message = _refusal(checkpoint_bytes("cifar_resnet56", model, optimizer), tmp_path, capsys)
    assert "'cifar_resnet56' is not supported" in message and SUPPORTED in message
    for legacy in (False, True):
        good = checkpoint_bytes("cifar_resnet20", model, optimizer, legacy)
        assert "damaged or truncated" in _refusal(good[: len(good) // 2], tmp_path, capsys)
    state = model.state_dict()
    del state["1.fc.weight"]
    message = _refusal(_saved({"arch": "cifar_resnet20", "state_dict": state}), tmp_path, capsys)
    assert "does not match cifar_resnet20: missing keys: fc.weight" in message and SUPPORTED in message
    outside = {"arch": "cifar_resnet20", "state_dict": {**model.state_dict(), "0.means": torch.zeros(3)}}
    assert "keys outside the net (0.means)" in _refusal(_saved(outside), tmp_path, capsys)


class _RunsCode:
    """Unpickling this runs ``Path.touch`` on the marker: what a hostile checkpoint entry could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_read_with_weights_only_so_pickled_objects_are_refused(resnet20_file, tmp_path, monkeypatch, capsys):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_user_model(resnet20_file[0])
    assert calls == [True]
    marker = tmp_path / "code-ran"
    model, _ = cohen_model("cifar_resnet20")
    for extra in ({"hostile": _RunsCode(marker)}, {"args": argparse.Namespace(arch="cifar_resnet20")}):
        data = _saved({"arch": "cifar_resnet20", "state_dict": model.state_dict(), **extra})
        message = _refusal(data, tmp_path, capsys)
        assert "Pickled Python objects are never loaded" in message
        assert "re-saved with only its 'arch' and 'state_dict' entries" in message
        assert cohen_statement(data) is None
    assert not marker.exists()
    assert all(weights_only is True for weights_only in calls)


def test_other_training_checkpoints_with_arch_stay_plain_state_dicts(resnet20_file):
    """pytorch/examples' ImageNet script also saves arch and state_dict, of a bare (DataParallel) net."""
    bare = resnet20_file[1][1]
    state = {f"module.{k}": v for k, v in bare.state_dict().items()}
    data = _saved({"epoch": 1, "arch": "resnet20", "state_dict": state, "best_acc1": torch.tensor(0.5)})
    assert cohen_statement(data) is None
    loaded = load_user_model(data, architecture="resnet20", mean=CIFAR_MEAN, std=CIFAR_STD)
    assert loaded.info.source == "upload" and loaded.info.weights_hash == state_dict_hash(bare)


def test_cohen_statement_tells_cohen_files_from_others(resnet20_file):
    assert cohen_statement(resnet20_file[0].read_bytes()).arch == "cifar_resnet20"
    buffer = io.BytesIO()
    torch.save(resnet20_file[1][1].state_dict(), buffer)
    assert cohen_statement(buffer.getvalue()) is None
    assert cohen_statement(b"not a model") is None


def test_app_upload_fills_in_and_loads_a_cohen_checkpoint(app_env, resnet20_file):
    path, original = resnet20_file
    at = AppTest.from_file(str(APP), default_timeout=240).switch_page(nav.MODEL_IMAGE).run()
    at.selectbox(key="mu_norm").set_value("cifar10")
    at.selectbox(key="mu_classes").set_value("imagenet")
    at.run()
    uploader = next(u for u in at.file_uploader if u.key == "mu_file")
    uploader.upload(path.name, path.read_bytes(), "application/octet-stream")
    at.run()
    # the checkpoint's own statements replace what was chosen before
    assert (at.selectbox(key="mu_norm").value, at.selectbox(key="mu_classes").value) == ("self", "cifar10")
    assert at.text_input(key="mu_size").value == "3,32,32"
    assert any("Cohen-format checkpoint of cifar_resnet20 for cifar10" in i.value for i in at.info)
    next(b for b in at.button if b.key == "mu_load").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    choice = at.session_state[state.MODEL]
    assert choice.name == path.name and choice.upload is not None
    model, card = at.session_state[state.UPLOADED_MODELS][choice.upload]
    assert card.file_format == "Cohen-format checkpoint (cifar_resnet20)"
    assert card.normalization.startswith("the checkpoint's (cifar10: mean (0.4914, 0.4822, 0.4465)")
    _same_outputs(model.cpu(), original, (3, 32, 32))
