"""Which engine runs the model's inference-only forward: torch as loaded, or ONNX Runtime on the CPU.

Why: certification is forward passes, and on a CPU ONNX Runtime runs the same function 1.8-1.9x faster
than eager PyTorch on a quiet machine and about 3.8x faster on a busy one (issue 23; ``make bench``).
The backend is chosen by wrapping the model (:func:`inference_model`), so certify, predict, the attacks
and the commands need no branch: the wrapper answers gradient-free calls with the exported graph and
everything else with torch. ``auto`` picks ONNX Runtime for a model on the CPU and keeps torch on
CUDA/MPS (not measured to gain there). A model that cannot be exported, or whose graph does not give
torch's logits, keeps torch, with a note saying why.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import nn

from dsmooth_core.backends.agreement import GraphDisagrees, check_agreement, probe_inputs
from dsmooth_core.backends.onnx_forward import OnnxForward
from dsmooth_core.backends.onnx_graph import ExportFailed, export_graph, graph_path, read_cached, write_cached
from dsmooth_core.contract import check_count, evaluating, first_line, model_name
from dsmooth_core.device import model_device

BACKENDS = ("auto", "torch", "onnxruntime")
BACKEND_ENV = "DSMOOTH_BACKEND"  # the default backend, for the commands and the app alike
# Graphs checked in this process, by cache key: the key covers the weights as they are, so a graph that
# agreed once agrees again, and a worker's later jobs skip the export, the file and the probe.
_CHECKED: dict[str, tuple[bytes, str]] = {}

__all__ = ["BACKENDS", "BACKEND_ENV", "OnnxForward", "default_backend", "forward_name", "inference_model"]


def default_backend() -> str:
    """``$DSMOOTH_BACKEND`` (e.g. torch where exporting does not pay, as in the test suite), else auto."""
    return os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"


def forward_name(model: nn.Module) -> str:
    """Which engine answers ``model``'s gradient-free forward: ``"onnxruntime"`` or ``"torch"``.

    Read from the object that will run, never from the backend asked for, so a fallback to torch (or a
    wrapper moved to a GPU, which becomes the torch model) is named as what it is. Results carry this
    name in their identity: the two engines' votes may differ by a handful of float near-ties.
    """
    return "onnxruntime" if isinstance(model, OnnxForward) else "torch"


def inference_model(
    model: nn.Module, backend: str | None = None, threads: int | None = None, samples: torch.Tensor | None = None
) -> tuple[nn.Module, str]:
    """``model`` for inference on ``backend`` (default :func:`default_backend`), and a one-line note
    saying what runs the forward and why.

    ``threads``: ONNX Runtime's intra-op threads (default: follow ``torch.get_num_threads()``).
    ``samples``: real images ``(B, C, H, W)`` in [0, 1] for the agreement probe (default: the gallery).
    The returned module takes and returns what ``model`` does, carries its ``.info``, and must not be
    used after ``model``'s weights change (the graph holds a copy).
    """
    backend = default_backend() if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if threads is not None:
        check_count("threads", threads)
    if isinstance(model, OnnxForward):
        return (model.model, "forward: torch") if backend == "torch" else (model, "forward: onnxruntime")
    if backend == "torch":
        return model, "forward: torch"
    device = model_device(model)
    if device.type != "cpu":
        if backend == "auto":
            return model, f"forward: torch (on {device}, where the ONNX Runtime CPU backend does not apply)"
        return model, f"note: the onnxruntime backend runs on the CPU and the model is on {device}; using torch"
    if importlib.util.find_spec("onnxruntime") is None:
        return model, "note: onnxruntime is not installed (pip install onnxruntime); using torch"
    try:
        forward, how = _onnx_forward(model, threads, samples)
    except (ExportFailed, GraphDisagrees) as exc:
        return model, f"note: model {model_name(model)} cannot run on onnxruntime: {exc}; using torch"
    budget = f"{threads} threads" if threads else "torch's thread count"
    return forward, f"forward: onnxruntime (CPU, {budget}); {how}"


def _onnx_forward(model: nn.Module, threads: int | None, samples: torch.Tensor | None) -> tuple[OnnxForward, str]:
    """The checked graph of ``model``: from the cache when it still agrees with torch, else freshly exported.

    A refusal is remembered beside the graph's place (``<key>.refused``), so a model that cannot be
    exported costs the attempt once, not at every job; deleting that file tries again.
    """
    info = getattr(model, "info", None)
    if info is None:
        raise ExportFailed("it has no .info.input_shape to export for")
    shape = tuple(info.input_shape)
    with evaluating(model):
        path = graph_path(model, shape)
        if path.stem in _CHECKED:
            graph, how = _CHECKED[path.stem]
            return OnnxForward(model, graph, threads), f"checked earlier in this process: {how}"
        refusal = path.with_suffix(".refused")
        if refusal.is_file():
            raise ExportFailed(f"{refusal.read_text().strip()} (remembered in {refusal})")
        inputs = probe_inputs(model, samples)
        cached = read_cached(path)
        stale = ""
        if cached is not None:
            forward = OnnxForward(model, cached, threads)
            try:
                how = f"graph from {path}; {check_agreement(model, forward, inputs)}"
                _CHECKED[path.stem] = (cached, how)
                return forward, how
            except Exception as exc:  # a damaged or stale file: export again, never trust it
                stale = f" (replaced a cached graph that failed: {first_line(exc)})"
        try:
            graph, exporter = export_graph(model, shape)
            forward = OnnxForward(model, graph, threads)
            agreement = _agreement(model, forward, inputs)
        except (ExportFailed, GraphDisagrees) as exc:
            write_cached(refusal, str(exc).encode())
            raise
        saved = f"cached at {path}" if write_cached(path, graph) else "not cached (the cache folder is not writable)"
        how = f"exported by the {exporter}, {saved}{stale}; {agreement}"
        _CHECKED[path.stem] = (graph, how)
        return forward, how


def _agreement(model: nn.Module, forward: OnnxForward, inputs: torch.Tensor) -> str:
    """:func:`check_agreement`, with ONNX Runtime's own failures (a graph it cannot load or run) as refusals."""
    try:
        return check_agreement(model, forward, inputs)
    except GraphDisagrees:
        raise
    except Exception as exc:
        raise GraphDisagrees(f"ONNX Runtime could not run the exported graph ({first_line(exc)})") from exc
