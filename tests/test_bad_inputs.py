"""The bad-input corpus: every input a new user got a silently wrong result, a crash or an obscure
error from, fed to the library, the loaders and the CLI. Each must be refused with a clear message,
and nothing may be certified or written. The corpus is built here; no binary file is committed.
"""

from __future__ import annotations

import fcntl
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dsmooth_core import IsotropicGaussian, LowRankCovariance, bundled, certify, predict
from dsmooth_core.attacks import PRESETS, square_then_fgsm
from dsmooth_core.cli import main
from dsmooth_core.cli.result_files import settings_path
from dsmooth_core.contract import ModelContractError, NonFiniteLogitsError
from dsmooth_core.data import DataUnavailableError, load_cifar10
from dsmooth_core.models import BUNDLED_WEIGHTS, ModelInfo, ModelLoadError, build_architecture, load_user_model, wrap
from dsmooth_core.models.registry import load_model
from dsmooth_core.profiles import Calibration, ThreatProfile, build_profile
from tests.fakedata import write_fake_cifar10

SHAPE = (3, 4, 4)
BUNDLED_PROFILE = bundled.PROFILE


class _Linear(nn.Module):
    """Two logits from a fixed linear score; ``poison`` turns chosen outputs into NaN."""

    def __init__(self, poison: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, 48).view(1, *SHAPE), requires_grad=False)
        self.poison = poison

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.w).flatten(1).sum(1) + 0.3
        logits = torch.stack([-score, score], dim=1)
        if self.poison is not None:
            logits = torch.where(self.poison(x)[:, None], torch.full_like(logits, float("nan")), logits)
        return logits


def _declared(net: nn.Module, shape: tuple[int, int, int] = SHAPE) -> nn.Module:
    """``net`` wrapped with a ModelInfo that declares its input shape and two classes."""
    return wrap(net, ModelInfo("toy", "custom", shape, ("a", "b"), "test"))


def _nan_everywhere(x: torch.Tensor) -> torch.Tensor:
    return torch.ones(len(x), dtype=torch.bool)


def _nan_far_from_grey(x: torch.Tensor) -> torch.Tensor:
    """NaN only for noisy inputs (the grey probe passes): the per-batch check must catch it."""
    return (x - 0.5).abs().flatten(1).amax(1) > 0.9


X = torch.full(SHAPE, 0.5)
GOOD = {"n0": 10, "n": 20, "alpha": 0.01, "batch_size": 8, "generator": torch.Generator().manual_seed(0)}

# --------------------------------------------------------------------------------------------- library
LIBRARY = {
    "nan model": (lambda: _declared(_Linear(_nan_everywhere)), {}, NonFiniteLogitsError, "non-finite logits"),
    "nan only under noise": (
        lambda: _Linear(_nan_far_from_grey),
        {"noise": IsotropicGaussian(2.0)},
        NonFiniteLogitsError,
        r"non-finite logits \(NaN or inf\) for \d+ of",
    ),
    "sigma 3.5e38": (lambda: _Linear(), {"noise": IsotropicGaussian(3.5e38)}, ValueError, "overflows float32"),
    "image (3, 1, 1)": (lambda: _declared(_Linear()), {"x": torch.full((3, 1, 1), 0.5)}, ModelContractError, "shape"),
    "image (3, 8, 8)": (lambda: _declared(_Linear()), {"x": torch.full((3, 8, 8), 0.5)}, ModelContractError, "shape"),
    "image (3, 64, 64)": (lambda: _declared(_Linear()), {"x": torch.rand(3, 64, 64)}, ModelContractError, "shape"),
    "image (3, 0, 0)": (lambda: _Linear(), {"x": torch.zeros(3, 0, 0)}, ValueError, "no empty dimension"),
    "numpy image": (lambda: _Linear(), {"x": np.full(SHAPE, 0.5, np.float32)}, TypeError, "torch.Tensor"),
    "n0=50.5": (lambda: _Linear(), {"n0": 50.5}, TypeError, "n0 must be an integer"),
    "batch_size=2.5": (lambda: _Linear(), {"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
    "n=True": (lambda: _Linear(), {"n": True}, TypeError, "n must be an integer"),
    "generator=None": (lambda: _Linear(), {"generator": None}, TypeError, "torch.Generator"),
    "wrong output shape": (lambda: _Scores(), {}, ModelContractError, r"logits of shape \(batch, classes\)"),
    "static batch size": (
        lambda: _StaticBatch(),
        {},
        ModelContractError,
        "any size B",
    ),
}


class _Scores(_Linear):
    """One score per image instead of a row of logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, 1]


class _StaticBatch(_Linear):
    """Like a torch.export program traced for one batch size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != 2:
            raise RuntimeError("Guard failed: x.size()[0] == 2")
        return super().forward(x)


@pytest.mark.parametrize("case", LIBRARY, ids=list(LIBRARY))
@pytest.mark.parametrize("entry", [certify, predict])
def test_library_refuses_each_bad_input(case: str, entry: Callable) -> None:
    make_model, override, error, message = LIBRARY[case]
    if entry is predict and "n0" in override:  # predict has no selection step: the same value as n
        override, message = {"n": override["n0"]}, message.replace("n0", "n")
    args = {"x": X, "noise": IsotropicGaussian(0.25), **GOOD, **override}
    if entry is predict:
        args.pop("n0")
    model = make_model()
    with pytest.raises(error, match=message):
        entry(model, **args)


@pytest.mark.parametrize(
    ("model", "x", "message"),
    [
        (_declared(_Linear(_nan_everywhere)), torch.full((2, *SHAPE), 0.5), "non-finite logits"),
        (_declared(_Linear()), torch.full((2, 3, 8, 8), 0.5), "takes images of shape"),
        (_Linear(), np.full((2, *SHAPE), 0.5, np.float32), "torch.Tensor"),
        (_StaticBatch(), torch.full((2, *SHAPE), 0.5), "any size B"),
    ],
    ids=["nan model", "wrong image shape", "numpy batch", "static batch"],
)
def test_attack_and_profile_refuse_each_bad_input(model: nn.Module, x, message: str) -> None:
    labels = torch.tensor([0, 1])
    with pytest.raises((ValueError, TypeError), match=message):
        square_then_fgsm(model, x, labels, PRESETS["conventional"], generator=torch.Generator())
    with pytest.raises((ValueError, TypeError), match=message):
        calibration = Calibration(size=2, attack=PRESETS["conventional"], k=1, split="s", dataset="d")
        build_profile(model, x, labels, calibration, indices=[0, 1])


def test_train_mode_model_is_certified_in_eval_mode_and_left_as_it_was() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(16, 3))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    noise, gen = IsotropicGaussian(0.25), lambda: torch.Generator().manual_seed(0)
    in_train = certify(net, X, noise, 10, 50, 0.01, 16, gen())
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BatchNorm statistics untouched
    in_eval = certify(net.eval(), X, noise, 10, 50, 0.01, 16, gen())
    assert in_train.counts_estimation == in_eval.counts_estimation and not net.training


# --------------------------------------------------------------------------------------------- loaders
def _state_dict_bytes(transform: Callable[[dict], dict] | None = None) -> bytes:
    state = build_architecture("resnet20").state_dict()
    buffer = io.BytesIO()
    torch.save(transform(state) if transform else state, buffer)
    return buffer.getvalue()


def _flip_bytes(data: bytes, count: int = 2000) -> bytes:
    """Invert ``count`` bytes in the middle of the file (the tensor data, not the zip directory)."""
    out = bytearray(data)
    start = len(out) // 2 - count // 2
    out[start : start + count] = bytes(b ^ 0xFF for b in out[start : start + count])
    return bytes(out)


def _nan_weights(state: dict) -> dict:
    return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}


def _static_export(tmp_path: Path) -> Path:
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(net, (torch.rand(2, 3, 8, 8),)), path)
    return path


LOADERS = {
    "nan state dict (user model)": (
        lambda tmp: load_user_model(_state_dict_bytes(_nan_weights), architecture="resnet20"),
        "non-finite values",
    ),
    "nan state dict (--weights)": (
        lambda tmp: load_model("bundled-resnet20", weights=_write(tmp / "nan.pt", _state_dict_bytes(_nan_weights))),
        "non-finite values",
    ),
    "bit-flipped state dict (user model)": (
        lambda tmp: load_user_model(_flip_bytes(_state_dict_bytes()), architecture="resnet20"),
        "CRC|damaged",
    ),
    "bit-flipped state dict (--weights)": (
        lambda tmp: load_model("bundled-resnet20", weights=_write(tmp / "f.pt", _flip_bytes(_state_dict_bytes()))),
        "CRC|damaged",
    ),
    "std nan": (
        lambda tmp: load_user_model(_state_dict_bytes(), architecture="resnet20", std=(float("nan"), 1, 1)),
        "finite positive std",
    ),
    "mean inf": (
        lambda tmp: load_user_model(_state_dict_bytes(), architecture="resnet20", mean=(float("inf"), 0, 0)),
        "finite mean",
    ),
    "static-batch torch.export": (
        lambda tmp: load_user_model(_static_export(tmp).read_bytes(), trust_code=True),
        "any size B",
    ),
    ".pt2 as --weights": (
        lambda tmp: load_model("bundled-resnet20", weights=_static_export(tmp)),
        "torch.export program, not a state dict",
    ),
    "text file as --weights": (
        lambda tmp: load_model("bundled-resnet20", weights=_write(tmp / "w.pt", b"these are not weights\n")),
        "could not be read safely",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", LOADERS, ids=list(LOADERS))
def test_loaders_refuse_each_bad_file(case: str, tmp_path: Path) -> None:
    load, message = LOADERS[case]
    with pytest.raises((ModelLoadError, ValueError, RuntimeError), match=message):
        load(tmp_path)


def _profile_blob(tmp_path: Path) -> dict:
    cov = LowRankCovariance.fit(torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(0)), k=2)
    profile = ThreatProfile(cov, "m", "h", "cifar10", "train", (1, 2), {}, "successful", 6, 6, 0)
    profile.save(tmp_path / "good.pt")
    return torch.load(tmp_path / "good.pt", weights_only=True)


PROFILE_FIELDS = {
    "indices not a list": lambda b: b["metadata"].update(indices="1,2"),
    "model_hash a number": lambda b: b["metadata"].update(model_hash=7),
    "seed missing": lambda b: b["metadata"].pop("seed"),
    "shape of strings": lambda b: b["summary"].update(shape=["3", "4", "4"]),
    "eigenvalues a list": lambda b: b.update(base_eigenvalues=[1.0, 0.5]),
    "summary a string": lambda b: b.update(summary="none"),
}


@pytest.mark.parametrize("case", PROFILE_FIELDS, ids=list(PROFILE_FIELDS))
def test_profile_files_with_wrong_typed_fields_say_so(case: str, tmp_path: Path) -> None:
    blob = _profile_blob(tmp_path)
    PROFILE_FIELDS[case](blob)
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"not a valid covariance file|malformed threat-profile metadata"):
        ThreatProfile.load(tmp_path / "bad.pt")


# --------------------------------------------------------------------------------------------- data files
def _npz_variants(folder: Path) -> dict[str, bytes]:
    good = (folder / "cifar10" / "test.npz").read_bytes()
    return {"zero-byte": b"", "truncated": good[: len(good) // 2], "bit-flipped": _flip_bytes(good, 200)}


@pytest.mark.parametrize("variant", ["zero-byte", "truncated", "bit-flipped"])
def test_damaged_npz_is_refused(variant: str, tmp_path: Path) -> None:
    root = write_fake_cifar10(tmp_path / "data", per_class=2)
    (root / "cifar10" / "test.npz").write_bytes(_npz_variants(root)[variant])
    with pytest.raises(DataUnavailableError, match="not a valid CIFAR-10 file"):
        load_cifar10("test", root, download=False)


# --------------------------------------------------------------------------------------------- CLI
CERTIFY = ["certify", "--n0", "5", "--n", "20", "--batch", "10", "--max", "1", "--device", "cpu"]


def _cli_cases(tmp: Path, data: Path) -> dict[str, tuple[list[str], str]]:
    """Command lines (with the files they need, made here) and the message each must give."""
    nan = _write(tmp / "nan.pt", _state_dict_bytes(_nan_weights))
    flipped = _write(tmp / "flipped.pt", _flip_bytes(BUNDLED_WEIGHTS.read_bytes()))
    text = _write(tmp / "notes.pt", b"not weights\n")
    wide = write_fake_cifar10(tmp / "wide", per_class=1)
    npz = wide / "cifar10" / "test.npz"
    np.savez(npz, images=np.zeros((10, 64, 64, 3), np.uint8), labels=np.arange(10), classes=np.arange(10).astype(str))
    many = write_fake_cifar10(tmp / "many", per_class=1)
    twenty = np.arange(20).astype(str)
    np.savez(
        many / "cifar10" / "test.npz", images=np.zeros((10, 32, 32, 3), np.uint8), labels=np.arange(10), classes=twenty
    )
    damaged = {}
    for variant, content in _npz_variants(data).items():
        root = write_fake_cifar10(tmp / variant, per_class=1)
        (root / "cifar10" / "test.npz").write_bytes(content)
        damaged[variant] = root
    records = _write(tmp / "other.jsonl", b'{"name": "not a record"}\n')
    untrained = [*CERTIFY, "--model", "cifar10_resnet20", "--untrained", "--data-dir", str(data)]
    bundled = [*CERTIFY, "--data-dir", str(data)]
    return {
        "nan weights": ([*bundled, "--weights", str(nan)], "non-finite values"),
        "bit-flipped weights": ([*bundled, "--weights", str(flipped)], "CRC"),
        ".pt2 weights": ([*bundled, "--weights", str(_static_export(tmp))], "torch.export program"),
        "text weights": ([*bundled, "--weights", str(text)], "could not be read safely"),
        "sigma 3.5e38": ([*untrained, "--sigma", "3.5e38"], "overflows float32"),
        "profile for untrained weights": (
            [*untrained, "--method", "dsmooth", "--profile", str(BUNDLED_PROFILE)],
            "this threat profile was built on model '[^']+' \\(weights [0-9a-f]+\\), not on",
        ),
        "image in the calibration set": (
            [*bundled, "--split", "train", "--start", "50", "--method", "dsmooth", "--profile", str(BUNDLED_PROFILE)],
            "used to calibrate this profile",
        ),
        "64x64 data folder": ([*untrained[:-1], str(wide)], r"takes images of shape \(3, 32, 32\), got \(3, 64, 64\)"),
        **{
            f"{variant} npz": ([*untrained[:-1], str(root)], "not a valid CIFAR-10 file")
            for variant, root in damaged.items()
        },
        "20-class data folder": ([*untrained[:-1], str(many)], "the data set has 20 classes"),
        "unknown device": ([*untrained[:-2], "--device", "tpu9"], "not a device name|only cpu"),
        "out is a directory": ([*untrained, "--out", str(tmp)], "is a directory"),
        "out is another file": ([*untrained, "--out", str(records)], "not a certify TSV"),
        "negative start": ([*untrained, "--start", "-5"], "--start must be 0 or more"),
        "compile on ray": ([*untrained, "--compile", "--engine", "ray"], "--compile .* Ray workers"),
        "text file as profile": (
            [*untrained, "--method", "dsmooth", "--profile", str(text)],
            "not a readable covariance",
        ),
        "text file as --init": (
            ["train", "--out", str(tmp / "m.pt"), "--init", str(text), "--data-dir", str(data), "--device", "cpu"],
            "could not be read safely",
        ),
        "wrong-schema JSONL (analyse)": (["experiment", "analyse", str(records), "--out", str(tmp / "r")], "line 1"),
        "wrong-schema JSONL (run)": (
            ["experiment", "run", "--untrained", "--records", str(records), "--data-dir", str(data)],
            "not an experiment record",
        ),
    }


CLI_CASES = [
    "nan weights",
    "bit-flipped weights",
    ".pt2 weights",
    "text weights",
    "sigma 3.5e38",
    "profile for untrained weights",
    "image in the calibration set",
    "64x64 data folder",
    "20-class data folder",
    "zero-byte npz",
    "truncated npz",
    "bit-flipped npz",
    "unknown device",
    "out is a directory",
    "out is another file",
    "negative start",
    "compile on ray",
    "text file as profile",
    "text file as --init",
    "wrong-schema JSONL (analyse)",
    "wrong-schema JSONL (run)",
]


@pytest.fixture(scope="module")
def cli_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("corpus")
    data = write_fake_cifar10(tmp / "data", per_class=6)
    return tmp, _cli_cases(tmp, data)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the CLI; it must exit with code 2 and one line on stderr, no traceback. Returns that line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_each_bad_input(case: str, cli_corpus, capsys: pytest.CaptureFixture) -> None:
    if case == "image in the calibration set" and not BUNDLED_PROFILE.is_file():
        pytest.skip("the bundled profile is not built")
    tmp, cases = cli_corpus
    argv, message = cases[case]
    out = tmp / "out" / f"{case}.tsv"
    if "--out" not in argv and argv[0] == "certify":
        argv = [*argv, "--out", str(out)]
    before = _snapshot(tmp)
    line = _refused(argv, capsys)
    assert re.search(message, line), line
    assert _snapshot(tmp) == before and not out.exists()  # nothing written, nothing changed


def test_cli_cuda_without_cuda_is_refused(cli_corpus, capsys: pytest.CaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    tmp, _ = cli_corpus
    out = tmp / "cuda.tsv"
    line = _refused([*CERTIFY[:-2], "--untrained", "--device", "cuda", "--out", str(out)], capsys)
    assert "CUDA is not available" in line and not out.exists()


def test_debug_flag_shows_the_traceback(cli_corpus, capsys: pytest.CaptureFixture) -> None:
    _, cases = cli_corpus
    argv, _ = cases["out is a directory"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--debug"])
    assert exit_info.value.code == 2 and "Traceback" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- result files
def _certify_args(data: Path, out: Path, limit: int) -> list[str]:
    model = ["--model", "cifar10_resnet20", "--untrained", "--data-dir", str(data), "--out", str(out)]
    return ["certify", "--n0", "5", "--n", "20", "--batch", "10", "--max", str(limit), "--skip", "5", *model]


def _without_time(path: Path) -> list[list[str]]:
    """The TSV's fields but the wall-clock ``time`` column, which differs between runs."""
    return [line.split("\t")[:5] + line.split("\t")[6:] for line in path.read_text().splitlines()]


def test_torn_last_tsv_line_is_dropped_and_redone(tmp_path: Path) -> None:
    data = write_fake_cifar10(tmp_path / "data", per_class=2)
    whole, torn = tmp_path / "whole.tsv", tmp_path / "torn.tsv"
    torch.manual_seed(0)
    assert main(_certify_args(data, whole, 3)) == 0
    lines = whole.read_text().splitlines(keepends=True)
    torn.write_text("".join(lines[:3]) + lines[3][:7])  # header, two rows, and half of the third
    settings_path(torn).write_bytes(settings_path(whole).read_bytes())  # the settings travel with the rows
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert main(_certify_args(data, torn, 3)) == 0
    assert _without_time(torn) == _without_time(whole)  # the torn row redone, nothing glued, nothing repeated


def test_second_writer_of_one_out_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_fake_cifar10(tmp_path / "data", per_class=2)
    out = tmp_path / "busy.tsv"
    out.write_text("")
    with out.open("a") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process's writer
        line = _refused(_certify_args(data, out, 2), capsys)
    assert "being written by another process" in line and out.read_text() == ""


def test_record_store_refuses_a_second_writer(tmp_path: Path) -> None:
    from dsmooth_core.appendfile import FileBusyError
    from dsmooth_core.experiments import RecordStore

    path = tmp_path / "r.jsonl"
    with RecordStore(path) as first:
        with pytest.raises(FileBusyError, match="another process"):
            RecordStore(path).__enter__()
        assert len(first) == 0
    with RecordStore(path):  # released: the file can be written again
        pass


def test_records_with_another_schema_are_refused_before_any_run(tmp_path: Path) -> None:
    from dsmooth_core.experiments import RecordStore

    path = _write(tmp_path / "r.jsonl", (json.dumps({"key": "k", "radius": 1}) + "\n").encode())
    with pytest.raises(ValueError, match="not an experiment record"):
        RecordStore(path)


def test_an_interrupted_certify_leaves_whole_rows_and_resumes(tmp_path: Path, monkeypatch) -> None:
    from dsmooth_core.cli import certify_cmd

    data = write_fake_cifar10(tmp_path / "data", per_class=2)
    whole, cut = tmp_path / "whole.tsv", tmp_path / "cut.tsv"
    torch.manual_seed(0)
    assert main(_certify_args(data, whole, 4)) == 0
    real, calls = certify_cmd.certify, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the third image is certified
        return real(*args, **kwargs)

    monkeypatch.setattr(certify_cmd, "certify", interrupted)
    torch.manual_seed(0)
    with pytest.raises(SystemExit) as exit_info:
        main(_certify_args(data, cut, 4))
    assert exit_info.value.code == 130
    assert _without_time(cut) == _without_time(whole)[:3]  # header and two whole rows, nothing torn
    monkeypatch.undo()
    torch.manual_seed(0)
    assert main(_certify_args(data, cut, 4)) == 0
    assert _without_time(cut) == _without_time(whole)
