"""The second probe's corpus (issue 22, items 3, 4 and 6): audits that cannot look, models that pass the probe
and still lie, and the obscure list. Each input must end in a clear one-line message (or an honest
"inconclusive"), never in a silently wrong result, a hang or a raw traceback.
"""

from __future__ import annotations

import http.server
import io
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest
from torch import nn

from dsmooth_core import IsotropicGaussian, certify
from dsmooth_core.attacks import AttackConfig, fgsm_l2, square_attack, square_then_fgsm
from dsmooth_core.audit import CONSISTENT, INCONCLUSIVE, AuditSettings, audit
from dsmooth_core.cli import main, profile_cmd
from dsmooth_core.contract import BatchDependenceError, ModelRuntimeError, NonFiniteLogitsError, model_contract
from dsmooth_core.data import load_cifar10, to_model_input
from dsmooth_core.experiments import read_records
from dsmooth_core.models import DEFAULT_MODEL, ModelInfo, load_user_model, prepare_image, wrap
from dsmooth_core.models.registry import load_model
from dsmooth_core.scale import ClusterUnavailableError, RayOptions, connect
from dsmooth_core.scale.cluster import check_task_fits
from dsmooth_lab_ui import audit_view, compute, nav, state
from dsmooth_lab_ui.model_upload import ModelCard
from tests.fakedata import write_fake_cifar10
from tests.oracles import LinearClassifier
from tests.test_app_audit import _certified_app

SHAPE = (3, 4, 4)
APP = Path(__file__).resolve().parents[1] / "app.py"
CIFAR = (3, 32, 32)


def _declared(net: nn.Module, shape: tuple[int, int, int] = SHAPE) -> nn.Module:
    return wrap(net, ModelInfo("toy", "custom", shape, ("dark", "bright"), "test"))


def _linear(distance_l2: float) -> tuple[LinearClassifier, torch.Tensor]:
    """A linear model whose boundary lies ``distance_l2`` (l2) from the grey image, class 1 there."""
    w = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.full(SHAPE, 0.5)
    return LinearClassifier(w, float((w * x).sum()) - distance_l2 * float(w.norm())), x


# ----------------------------------------------------------------------------- audits that cannot look
@pytest.fixture(scope="module")
def linear_certificate():
    model, x = _linear(0.5)
    noise = IsotropicGaussian(0.25)
    cert = certify(model, x, noise, 100, 2000, 0.001, 2000, torch.Generator().manual_seed(0))
    assert cert.prediction == 1 and 0 < cert.radius < 0.5
    return model, x, noise, cert


@pytest.mark.parametrize(
    ("settings", "fix"),
    [(AuditSettings(n=10), "use n >= 15 or alpha >= 0.0313"), (AuditSettings(alpha=1e-300), "use n >= 1002")],
)
def test_an_audit_whose_predict_cannot_name_a_class_is_inconclusive(linear_certificate, settings, fix):
    model, x, noise, cert = linear_certificate
    result = audit(model, x, noise, cert, settings, torch.Generator().manual_seed(1))
    assert result.verdict == INCONCLUSIVE and result.inconclusive and not result.violated
    assert "cannot name any class even when all draws agree" in result.reason and fix in result.reason
    assert result.predict_calls == 0 and result.empirical_bound == math.inf


def test_the_smallest_n_and_alpha_the_message_names_do_let_the_audit_look(linear_certificate):
    reach = AuditSettings(n=10).reach()
    assert not reach.able and reach.min_n == 15
    assert AuditSettings(n=reach.min_n).reach().able and not AuditSettings(n=reach.min_n - 1).reach().able
    assert AuditSettings(n=10, alpha=0.0313).reach().able and not AuditSettings(n=10, alpha=0.031).reach().able
    assert AuditSettings(n=1002, alpha=1e-300).reach().able
    smallest = AuditSettings(alpha=5e-324).reach()  # alpha / 16 underflows to 0: still an answer, not a crash
    assert not smallest.able and smallest.min_n == 1075 and "use n >= 1075" in smallest.reason()


def test_normal_settings_still_find_the_known_bound(linear_certificate):
    model, x, noise, cert = linear_certificate
    normal = AuditSettings(n=1000, steps=10, bisection_steps=6, batch_size=1000)
    result = audit(model, x, noise, cert, normal, torch.Generator().manual_seed(1))
    assert result.verdict == CONSISTENT and not result.reason
    assert 0.5 <= result.empirical_bound * (1 + 1e-6) < 0.75  # the exact radius is 0.5 (l2)


@pytest.mark.slow
def test_on_the_bundled_model_small_n_is_inconclusive_and_normal_settings_find_a_bound(app_data_dir):
    model, data = load_model(DEFAULT_MODEL), load_cifar10("test", app_data_dir)
    noise = IsotropicGaussian(0.25)
    for index in range(10):  # the first image the model certifies
        x = data.tensor([index])[0]
        cert = certify(model, x, noise, 50, 200, 0.001, 250, torch.Generator().manual_seed(index))
        if not cert.abstained:
            break
    assert not cert.abstained
    blind = audit(model, x, noise, cert, AuditSettings(n=10), torch.Generator().manual_seed(1))
    assert blind.verdict == INCONCLUSIVE and blind.predict_calls == 0
    normal = AuditSettings(n=300, draws=8, steps=5, bisection_steps=4, batch_size=300)
    found = audit(model, x, noise, cert, normal, torch.Generator().manual_seed(1))
    assert found.verdict == CONSISTENT and cert.radius < found.empirical_bound < math.inf


class _CoinFlip(nn.Module):
    """Class 0 or 1 by the parity of a hash of the input: half the votes each, wherever the input lies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parity = torch.floor(x.flatten(1).sum(1) * 1e4) % 2
        return torch.stack([parity, 1 - parity], dim=1)


def test_an_audit_whose_predict_abstained_everywhere_is_inconclusive(linear_certificate):
    _, x, noise, cert = linear_certificate
    settings = AuditSettings(n=200, steps=1, draws=2, growth_steps=1, bisection_steps=0, batch_size=200)
    result = audit(_CoinFlip(), x, noise, cert, settings, torch.Generator().manual_seed(0))
    assert result.verdict == INCONCLUSIVE and result.predict_calls == 2
    assert "abstained on all 2 candidates" in result.reason


def test_the_audit_command_says_inconclusive_and_what_would_let_it_look(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=1)))
    out = tmp_path / "audit.tsv"
    args = ["audit", "--model", "cifar10_resnet20", "--untrained", "--n0", "5", "--n", "20", "--alpha", "0.5"]
    args += ["--max", "2", "--device", "cpu", "--audit-n", "10", "--out", str(out)]
    torch.manual_seed(0)
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "note: every audit will be inconclusive" in captured.err and "use n >= 15" in captured.err
    verdicts = [line.split("\t")[7] for line in out.read_text().splitlines()[1:]]
    assert verdicts and set(verdicts) <= {INCONCLUSIVE, "abstained"} and INCONCLUSIVE in verdicts
    assert "consistent" not in captured.out and ": inconclusive (PREDICT with n = 10" in captured.out


# ----------------------------------------------------------------------- models that pass and still lie
class _BatchMean(nn.Module):
    """Logits of each image against its batch's mean: each image's answer depends on its company."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x - x.mean(dim=0, keepdim=True)).flatten(1).sum(1) + 0.1
        return torch.stack([-score, score], dim=1)


class _NanWhenBright(nn.Module):
    """A linear score, but NaN for images brighter than 0.8 on average (the grey probe passes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1).mean(1) - 0.4
        logits = torch.stack([-score, score], dim=1)
        bright = x.flatten(1).mean(1) > 0.8
        return torch.where(bright[:, None], torch.full_like(logits, float("nan")), logits)


def test_a_model_whose_logits_depend_on_its_batch_is_refused():
    model = _declared(_BatchMean())
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(BatchDependenceError, match="depends on the other images in the batch"):
        certify(model, torch.full(SHAPE, 0.5), IsotropicGaussian(0.25), 10, 20, 0.01, 10, gen)
    with pytest.raises(BatchDependenceError, match="gave the same image different logits in different batches"):
        square_attack(model, torch.rand(2, *SHAPE), torch.tensor([0, 1]), eps=0.1, n_queries=5, generator=gen)


def test_a_model_that_depends_on_its_batch_is_refused_at_load():
    scripted = torch.jit.script(_BatchMean())
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    with pytest.raises(ValueError, match="depends on the other images in the batch"):
        load_user_model(buffer.getvalue(), input_shape=SHAPE, trust_code=True)


def test_a_model_nan_only_on_bright_images_is_refused_by_the_attacks_and_the_probability_view():
    model = _declared(_NanWhenBright())
    bright, label, gen = torch.full((1, *SHAPE), 0.9), torch.tensor([1]), torch.Generator().manual_seed(0)
    config = AttackConfig(eps_inf=0.05, n_queries=5)
    with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
        square_then_fgsm(model, bright, label, config, generator=gen)
    with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
        compute.class_probabilities(model, bright[0])
    # inside a contract probed on a dark image, the attacks' own logit checks still catch it
    dark = torch.full((1, *SHAPE), 0.5)
    with model_contract(model, SHAPE, dark):
        with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
            square_attack(model, bright, label, eps=0.05, n_queries=5, generator=gen)
        with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
            fgsm_l2(model, bright, label, 0.1)


@pytest.mark.slow  # starts the app (about 10 s on a shared CPU)
def test_the_model_page_shows_no_nan_percent_for_a_model_nan_on_this_image(app_env):
    at = AppTest.from_file(str(APP), default_timeout=120).switch_page(nav.MODEL_IMAGE)
    at.session_state[state.PROFILE_DEFAULT_TRIED] = True
    at.run()
    info = ModelInfo("nan-when-bright", "custom", CIFAR, ("dark", "bright"), "test")
    model = wrap(_NanWhenBright(), info)
    identity = model.info.identity
    card = ModelCard("bright.pt", "test", "1" * 64, 0, CIFAR, info.class_names, "self", (), "none", identity)
    at.session_state[state.UPLOADED_MODELS] = {identity: (model, card)}
    at.session_state[state.MODEL] = state.ModelChoice("bright.pt", upload=identity)
    pixels = np.full((32, 32, 3), 240, dtype=np.uint8)
    at.session_state[state.IMAGE] = state.ImageChoice("bright-square", "test", "a bright square", pixels)
    at.switch_page(nav.MODEL_IMAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("nan" in f"{m.value} {m.delta}".lower() for m in at.metric), [m.delta for m in at.metric]
    assert any("No prediction for this image" in e.value and "non-finite logits" in e.value for e in at.error)


def test_a_float_image_outside_the_unit_range_is_refused_not_clamped():
    in_255 = torch.full(CIFAR, 128.0)
    info = ModelInfo("toy", "cifar10", CIFAR, tuple("abcdefghij"), "test")
    for convert in (lambda: to_model_input(in_255, CIFAR), lambda: prepare_image(in_255, info)):
        with pytest.raises(ValueError, match=r"in \[0, 1\], got values from 128 to 128 \(an image in \[0, 255\]"):
            convert()
    with pytest.raises(ValueError, match=r"in \[0, 1\], got values from -0.5"):
        to_model_input(torch.full(CIFAR, -0.5), CIFAR)
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_model_input(torch.full(CIFAR, float("nan")), CIFAR)
    assert to_model_input(torch.full((3, 64, 64), 1.0), CIFAR).max() <= 1  # [0, 1] still resizes


def test_the_app_audit_widgets_allow_only_audits_that_can_look():
    assert AuditSettings(n=audit_view.MIN_N, alpha=audit_view.MIN_ALPHA, bisection_steps=100).reach().able
    assert not AuditSettings(n=10).reach().able  # the old minimum


@pytest.mark.slow  # certifies in the app first (about 20 s on a shared CPU)
def test_the_app_shows_an_inconclusive_audit_as_inconclusive(app_env):
    at = _certified_app()
    assert at.number_input(key="aud_n").min == audit_view.MIN_N
    assert at.number_input(key="aud_alpha").min == audit_view.MIN_ALPHA
    record = at.session_state[state.CERTIFY]
    noise, cert = next((noise, cert) for noise, cert in record.results if noise.name == "RandSmooth")
    model = next(iter(at.session_state[state.UPLOADED_MODELS].values()))[0]
    x = prepare_image(Image.fromarray(at.session_state[state.IMAGE].pixels), model.info)
    blind = audit(model, x, noise, cert, AuditSettings(n=10), torch.Generator().manual_seed(0))  # below the widget
    view = audit_view.AuditView(record.model_key, record.image_id, cert, blind)
    at.session_state[state.AUDIT] = {"RandSmooth": view}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [w.value for w in at.warning]
    assert any("Inconclusive: the audit could not look" in w and "use n >= 15" in w for w in shown), shown
    assert not any("Consistent" in b.value for b in at.success)


# ----------------------------------------------------------------------------------- the obscure list
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_address():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_http_server_is_no_ray_cluster_and_fails_within_seconds(http_address, scheme):
    started = time.perf_counter()
    with pytest.raises(ClusterUnavailableError, match="is not a Ray cluster: it does not speak gRPC"):
        connect(scheme + http_address, timeout=2)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    ("options", "what"),
    [(RayOptions(cpus_per_task=64), "--cpus-per-task 64 and"), (RayOptions(gpus_per_task=1), "--gpus-per-task 1:")],
)
def test_task_resources_no_node_has_are_refused(options, what):
    cpu_only = [{"CPU": 2.0, "memory": 1e9}, {"CPU": 4.0}]
    with pytest.raises(ClusterUnavailableError, match="no node of the Ray cluster can run a task") as refused:
        check_task_fits(options, cpu_only)
    assert what in str(refused.value) and "6 CPUs and 0 GPUs in all, the largest 4 CPUs and 0 GPUs" in str(
        refused.value
    )
    check_task_fits(options, [*cpu_only, {"CPU": 64.0, "GPU": 1.0}])  # one node fits: accepted


class _FailsOnLargeBatches(nn.Module):
    """A TorchScript-able model that raises inside its own code for batches over 3 (the probe's pass)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 3:
            raise RuntimeError("batches over 3 images are not supported")
        return x.flatten(1)[:, :10]


def _torchscript_file(path: Path, net: nn.Module) -> Path:
    torch.jit.save(torch.jit.script(net), str(path))
    return path


def test_a_torchscript_error_reaches_the_user_as_one_line(tmp_path, monkeypatch, capsys):
    model_file = _torchscript_file(tmp_path / "small.pt", _FailsOnLargeBatches())
    model = load_user_model(model_file, input_shape=CIFAR, trust_code=True)
    with pytest.raises(ModelRuntimeError) as failed:
        model(torch.full((4, *CIFAR), 0.5))
    message = str(failed.value)
    assert "\n" not in message and "RuntimeError: batches over 3 images are not supported" in message
    assert "TorchScript code" in message and "Traceback" not in message

    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=1)))
    args = ["certify", "--model-file", str(model_file), "--trust-code", "--classes", "cifar10"]
    args += ["--n0", "5", "--n", "10", "--max", "1", "--device", "cpu", "--out", str(tmp_path / "c.tsv")]
    with pytest.raises(SystemExit) as stopped:
        main(args)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1, err
    assert "batches over 3 images are not supported" in err and "Traceback" not in err and "unexpected" not in err


def test_profile_k_0_is_refused_before_any_attack(tmp_path, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded, so the attack would have run")

    monkeypatch.setattr(profile_cmd, "load_cifar_model", no_model)
    with pytest.raises(SystemExit) as stopped:
        main(["profile", "--model", "cifar10_resnet20", "--k", "0", "--out", str(tmp_path / "p.pt")])
    assert stopped.value.code == 2
    assert "--k is the number of directions the profile keeps, at least 1; got 0" in capsys.readouterr().err
    assert not (tmp_path / "p.pt").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_records_on_a_device_that_never_ends_are_refused(tmp_path, capsys):
    started = time.perf_counter()
    with pytest.raises(SystemExit) as stopped:
        main(["experiment", "run", "--model", "cifar10_resnet20", "--untrained", "--records", "/dev/full"])
    assert stopped.value.code == 2 and time.perf_counter() - started < 30
    assert "/dev/full is not a regular file" in capsys.readouterr().err
    fifo = tmp_path / "records.jsonl"
    os.mkfifo(fifo)  # would block forever if opened
    with pytest.raises(ValueError, match="is not a regular file"):
        read_records(fifo)
