"""--model-file on the CLI: third-party files certify, bad files get their own message, code needs trust; audit."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch

from dsmooth_core import LowRankCovariance
from dsmooth_core.cli import build_parser, main
from dsmooth_core.models.info import file_sha256
from dsmooth_core.models.model_file import ModelFileOptions, load_model_file
from tests.fakedata import write_fake_cifar10
from tests.user_models import (
    ThirdPartyNet,
    code_pickle_bytes,
    export_bytes,
    nan_bytes,
    state_dict_bytes,
    torchscript_bytes,
)

CERTIFY = ["certify", "--n0", "5", "--n", "20", "--batch", "10", "--skip", "5", "--max", "1", "--device", "cpu"]
CIFAR = ["--classes", "cifar10", "--input-size", "3,32,32"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = write_fake_cifar10(tmp_path / "data", per_class=2)
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(root))
    return root


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _fails(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "make", "extra"),
    [
        ("net.pt", torchscript_bytes, ["--trust-code", *CIFAR]),
        ("net.pt2", export_bytes, ["--trust-code", *CIFAR]),
        ("resnet20.pt", state_dict_bytes, ["--architecture", "resnet20", "--normalization", "cifar10"]),
    ],
)
def test_third_party_files_certify(data_dir, tmp_path, name, make, extra):
    model_file = _write(tmp_path, name, make())
    out = tmp_path / "cert.tsv"
    assert main([*CERTIFY, "--model-file", str(model_file), *extra, "--out", str(out)]) == 0
    (row,) = _rows(out)
    assert row["idx"] == "0" and row["metric"] == "l2" and int(row["predict"]) in range(-1, 10)


@pytest.mark.parametrize(("name", "make"), [("net.pt", torchscript_bytes), ("net.pt2", export_bytes)])
def test_programs_are_not_loaded_without_trust(data_dir, tmp_path, capsys, monkeypatch, name, make):
    model_file = _write(tmp_path, name, make())

    def never(*args, **kwargs):
        raise AssertionError("a program was loaded without the trust choice")

    monkeypatch.setattr(torch.jit, "load", never)
    monkeypatch.setattr(torch.export, "load", never)
    err = _fails([*CERTIFY, "--model-file", str(model_file), *CIFAR, "--out", str(tmp_path / "x.tsv")], capsys)
    assert "programs and can run code" in err and "trust" in err
    assert not (tmp_path / "x.tsv").exists()


def test_bad_files_each_get_their_message(data_dir, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    cases = [
        ("empty.pt", b"", [], "empty (0 bytes)"),
        ("cut.pt", torchscript_bytes()[:2000], ["--trust-code"], "not a TorchScript, torch.export or state-dict"),
        ("evil.pt", code_pickle_bytes(marker), ["--architecture", "resnet20"], "Pickled Python objects are never"),
        ("r20.pt", state_dict_bytes("resnet20"), ["--architecture", "resnet32"], "does not match resnet32"),
        ("five.pt", torchscript_bytes(outputs=5), ["--trust-code", *CIFAR], "10 class names given but the model has 5"),
        ("nan.pt", nan_bytes(), ["--trust-code", *CIFAR], "non-finite logits"),
    ]
    for name, data, extra, message in cases:
        model_file = _write(tmp_path, name, data)
        err = _fails([*CERTIFY, "--model-file", str(model_file), *extra, "--out", str(tmp_path / "x.tsv")], capsys)
        assert message in err, (name, err)
    assert not marker.exists()


def test_model_file_needs_cifar10_inputs_and_excludes_registry_options(data_dir, tmp_path, capsys):
    model_file = _write(tmp_path, "net.pt", torchscript_bytes())
    err = _fails([*CERTIFY, "--model-file", str(model_file), "--trust-code", "--out", str(tmp_path / "x.tsv")], capsys)
    assert "--classes cifar10" in err
    err = _fails([*CERTIFY, "--model-file", str(model_file), "--untrained", "--out", str(tmp_path / "x.tsv")], capsys)
    assert "replaces --model" in err
    err = _fails([*CERTIFY, "--model-file", str(model_file), "--normalization", "0.5", "--out", "x"], capsys)
    assert "mean/std" in err


def test_every_model_command_takes_a_model_file(data_dir, tmp_path):
    model_file = _write(tmp_path, "net.pt", torchscript_bytes())
    out = tmp_path / "attack.pt"
    argv = [
        "attack",
        "--model-file",
        str(model_file),
        "--trust-code",
        *CIFAR,
        "--max",
        "2",
        "--skip",
        "5",
        "--n-queries",
        "3",
    ]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    record = torch.load(out, weights_only=True)
    assert record["metadata"]["model_name"] == "net.pt" and len(record["indices"]) == 2
    parser = build_parser()  # the real one: every command that takes a model takes --model-file
    for head in (["profile"], ["experiment", "run", "--records", "r.jsonl"], ["audit", "--out", "a.tsv"]):
        args = parser.parse_args([*head, "--model-file", str(model_file), "--trust-code"])
        assert args.model_file == model_file and args.trust_code


AUDIT = ["audit", "--n0", "5", "--n", "20", "--batch", "10", "--skip", "5", "--device", "cpu"]
QUICK = ["--audit-n", "20", "--draws", "2", "--steps", "1", "--growth-steps", "1", "--bisection-steps", "1"]


def test_audit_writes_one_line_per_image_and_method_and_resumes(data_dir, tmp_path):
    model_file = _write(tmp_path, "net.pt", torchscript_bytes())
    out = tmp_path / "audit.tsv"
    base = [*AUDIT, *QUICK, "--model-file", str(model_file), "--trust-code", *CIFAR, "--out", str(out)]
    assert main([*base, "--methods", "randsmooth", "--max", "2"]) == 0
    first = _rows(out)
    assert [(r["idx"], r["method"]) for r in first] == [("0", "RandSmooth"), ("5", "RandSmooth")]
    assert list(first[0])[:4] == ["idx", "label", "method", "metric"]
    for row in first:
        if row["verdict"] == "abstained":
            assert row["radius"] == "0.0"
        else:
            assert row["verdict"] in ("consistent", "violation") and float(row["empirical_bound"]) > 0
    assert main([*base, "--methods", "randsmooth", "lsmooth", "--max", "2"]) == 0
    rows = _rows(out)
    assert rows[:2] == first  # resumed: only the missing (image, method) lines were added
    assert [(r["idx"], r["method"], r["metric"]) for r in rows[2:]] == [("0", "LSmooth", "l1"), ("5", "LSmooth", "l1")]


def test_audit_of_dsmooth_runs_in_the_mahalanobis_metric(data_dir, tmp_path):
    cov = LowRankCovariance.fit(torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(0)), k=3)
    cov.save(tmp_path / "cov.pt")
    model_file = _write(tmp_path, "net.pt", torchscript_bytes())
    out = tmp_path / "audit.tsv"
    argv = [*AUDIT, *QUICK, "--model-file", str(model_file), "--trust-code", *CIFAR, "--max", "1"]
    assert main([*argv, "--methods", "dsmooth", "--profile", str(tmp_path / "cov.pt"), "--out", str(out)]) == 0
    (row,) = _rows(out)
    assert row["method"] == "DSmooth" and row["metric"] == "mahalanobis"
    assert row["verdict"] in ("consistent", "violation") and float(row["empirical_bound"]) > 0, row


class _OtherCode(ThirdPartyNet):
    """The same weights as ThirdPartyNet behind other code: only the program file's hash tells them apart."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(2 * x - self.mean))


def _other_code_bytes() -> bytes:
    torch.manual_seed(0)  # the weights torchscript_bytes() draws
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_OtherCode().eval()), buffer)
    return buffer.getvalue()


def test_a_program_with_other_code_has_the_same_weights_but_another_identity(tmp_path):
    first = load_model_file(torchscript_bytes(), ModelFileOptions(trust_code=True), "a.pt")
    other = load_model_file(_other_code_bytes(), ModelFileOptions(trust_code=True), "a.pt")
    assert first.info.weights_hash == other.info.weights_hash
    assert first.info.code_hash == file_sha256(torchscript_bytes()) != other.info.code_hash
    assert first.info.architecture == "TorchScript" and first.info.identity != other.info.identity
    renormalized = load_model_file(
        torchscript_bytes(), ModelFileOptions(normalization="cifar10", trust_code=True), "a.pt"
    )
    assert renormalized.info.identity != first.info.identity


def _refused(argv: list[str], capsys) -> str:
    capsys.readouterr()
    return _fails(argv, capsys).strip().splitlines()[-1]


def test_a_certify_resume_with_another_normalization_or_program_is_refused(data_dir, tmp_path, capsys):
    model_file = _write(tmp_path, "net.pt", torchscript_bytes())
    out = tmp_path / "cert.tsv"
    base = [*CERTIFY, "--model-file", str(model_file), "--trust-code", *CIFAR, "--out", str(out)]
    assert main(base) == 0
    before = out.read_bytes()
    assert "the model's normalization (--normalization)" in _refused([*base, "--normalization", "cifar10"], capsys)
    model_file.write_bytes(_other_code_bytes())  # the same file name and weights, other code
    assert "the model's program (--model-file)" in _refused(base, capsys)
    assert out.read_bytes() == before


def test_an_audit_resume_with_other_settings_is_refused_and_max_0_leaves_no_file(data_dir, tmp_path, capsys):
    model_file = _write(tmp_path, "net.pt", torchscript_bytes())
    out = tmp_path / "audit.tsv"
    base = [*AUDIT, *QUICK, "--model-file", str(model_file), "--trust-code", *CIFAR, "--out", str(out), "--max", "1"]
    assert main(base) == 0
    before = out.read_bytes()
    for change, named in [
        (["--sigma", "0.5"], "--sigma: the file has 0.25, this run 0.5"),
        (["--alpha", "0.01"], "--alpha: the file has 0.001, this run 0.01"),
        (["--draws", "3"], "--draws: the file has 2, this run 3"),
        (["--audit-alpha", "0.01"], "--audit-alpha: the file has 0.001, this run 0.01"),
    ]:
        assert named in _refused([*base, *change], capsys)
    assert out.read_bytes() == before
    empty = tmp_path / "empty.tsv"
    assert "--max must be at least 1" in _refused([*base[:-4], "--out", str(empty), "--max", "0"], capsys)
    assert not empty.exists()
