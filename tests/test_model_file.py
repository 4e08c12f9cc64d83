"""What a user states about a model file: parsing, the size limit, CIFAR-10 marking and the probe's refusals."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from dsmooth_core.models import CIFAR10_CLASSES, ModelInfo, ModelLoadError, wrap
from dsmooth_core.models.model_file import (
    MAX_FILE_BYTES,
    ModelFileOptions,
    file_sha256,
    load_model_file,
    parse_classes,
    parse_input_size,
    parse_normalization,
    probe,
)
from tests.user_models import torchscript_bytes


def test_parsing_of_stated_options():
    assert parse_input_size("3,32,32") == (3, 32, 32) and parse_input_size("1x28x28") == (1, 28, 28)
    assert parse_input_size(None) is None
    for bad in ("3,32", "a,b,c", "3,0,32"):
        with pytest.raises(ModelLoadError, match="C,H,W"):
            parse_input_size(bad)
    assert parse_classes("cifar10") == CIFAR10_CLASSES and len(parse_classes("imagenet")) == 1000
    assert parse_classes("cat, dog") == ("cat", "dog")
    with pytest.raises(ModelLoadError, match="at least two"):
        parse_classes("cat")
    assert parse_normalization("self") == (None, None)
    assert parse_normalization("0.5,0.5,0.5/0.25,0.25,0.25") == ((0.5,) * 3, (0.25,) * 3)
    assert parse_normalization("imagenet")[0] == (0.485, 0.456, 0.406)
    with pytest.raises(ModelLoadError, match="mean/std"):
        parse_normalization("0.5")
    with pytest.raises(ModelLoadError, match="comma-separated numbers"):
        parse_normalization("a/b")


def test_size_limit_and_checksum(tmp_path, monkeypatch):
    data = torchscript_bytes()
    path = tmp_path / "net.pt"
    path.write_bytes(data)
    assert file_sha256(path) == file_sha256(data)
    monkeypatch.setattr("dsmooth_core.models.model_file.MAX_FILE_BYTES", len(data) - 1)
    with pytest.raises(ModelLoadError, match="at most"):
        load_model_file(data, ModelFileOptions(trust_code=True), "net.pt")
    assert MAX_FILE_BYTES >= 500 * 2**20  # the largest registry model fits


def test_cifar10_marking_and_source():
    options = ModelFileOptions(trust_code=True, classes="cifar10", input_size="3,32,32", normalization="cifar10")
    model = load_model_file(torchscript_bytes(), options, "net.pt")
    assert (
        model.info.dataset == "cifar10"
        and model.info.source == f"file:net.pt sha256:{file_sha256(torchscript_bytes())}"
    )
    custom = load_model_file(torchscript_bytes(), ModelFileOptions(trust_code=True), "net.pt")
    assert custom.info.dataset == "custom" and custom.info.class_names[0] == "class 0"


class _Broken(nn.Module):
    def __init__(self, output: str) -> None:
        super().__init__()
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 3)
        if self.output == "nan":
            return logits + float("nan")
        if self.output == "raise":
            raise RuntimeError("boom")
        return logits[:, :2]


@pytest.mark.parametrize(
    ("output", "message"), [("nan", "NaN"), ("raise", "failed on 4 test images: boom"), ("shape", r"\(4, 2\)")]
)
def test_probe_refuses_broken_outputs(output, message):
    info = ModelInfo("broken", "custom", (3, 8, 8), ("a", "b", "c"), "test")
    with pytest.raises(ModelLoadError, match=message):
        probe(wrap(_Broken(output), info), torch.rand(4, 3, 8, 8))


def test_probe_returns_predicted_classes():
    info = ModelInfo("zeros", "custom", (3, 8, 8), ("a", "b", "c"), "test")
    assert (
        probe(wrap(_Broken("fine"), dataclasses.replace(info, class_names=("a", "b"))), torch.rand(4, 3, 8, 8)).tolist()
        == [0] * 4
    )
