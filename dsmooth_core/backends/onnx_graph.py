"""The model's ONNX graph: exported once per model and input shape, then read from a disk cache.

Why a cache: the export traces the whole network (seconds for a ResNet-20, more for larger nets), while
the graph only changes when something that shapes the model's outputs changes. The cache key covers
all of that: the model's identity (weights, program code, normalization, input shape, classes), a hash
of the weights as they are now (a caller may have loaded other weights after ``wrap``), the module
tree, the input shape, and the exporter's version, so another model or other weights never reuse a graph.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from dsmooth_core.contract import first_line
from dsmooth_core.models.info import state_dict_hash
from dsmooth_core.settings import result_key

CACHE_ENV = "DSMOOTH_CACHE_DIR"
GRAPH_FORMAT = 1  # bump when the export settings below change, so older graphs are not reused
OPSET = 18
INPUT_NAME, OUTPUT_NAME = "pixels", "logits"


_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # torch's exporter colours its messages


def _reason(exc: BaseException) -> str:
    """The first line of the error's cause: the dynamo exporter wraps the real one in a generic message."""
    return _ANSI_COLOUR.sub("", first_line(exc.__cause__ or exc))


class ExportFailed(RuntimeError):
    """Neither of torch's ONNX exporters could turn the model into a graph (custom ops, Python-side code)."""


def cache_dir() -> Path:
    """Where graphs are kept: ``$DSMOOTH_CACHE_DIR/onnx``, else ``~/.cache/dsmooth/onnx``."""
    root = os.environ.get(CACHE_ENV, "").strip()
    return (Path(root) if root else Path.home() / ".cache" / "dsmooth") / "onnx"


def graph_key(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The cache key of ``model``'s graph for images of ``input_shape`` (see the module docstring)."""
    info = getattr(model, "info", None)
    return result_key(
        "onnx-graph",
        GRAPH_FORMAT,
        getattr(info, "identity", ""),
        state_dict_hash(model),
        repr(model),  # the module tree: two Python classes with the same weights are two graphs
        [int(v) for v in input_shape],
        torch.__version__,
    )


def graph_path(model: nn.Module, input_shape: tuple[int, ...]) -> Path:
    return cache_dir() / f"{graph_key(model, input_shape)}.onnx"


def read_cached(path: Path) -> bytes | None:
    """The cached graph's bytes, or ``None`` when there is none (or it cannot be read)."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def write_cached(path: Path, graph: bytes) -> bool:
    """Store ``graph`` atomically (a reader never sees half a file); False when the folder is not writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as tmp:
            tmp.write(graph)
        os.replace(tmp.name, path)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _quiet():
    """The exporters' progress lines and warnings stay out of the command's output."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()):
            yield


def export_graph(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[bytes, str]:
    """``model`` (in eval mode, on the CPU) as ONNX bytes with a dynamic batch, and which exporter made it.

    ``torch.onnx.export(dynamo=True)`` first; where it fails (e.g. a TorchScript program), the legacy
    TorchScript-based exporter, and the returned description says so.
    """
    example = torch.full((2, *input_shape), 0.5)  # batch 2: a batch of 1 would be specialised as a constant
    try:
        with _quiet():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
            )
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "graph.onnx"
                program.save(path, external_data=False)
                return path.read_bytes(), "torch.onnx dynamo exporter"
    except Exception as exc:  # user models may fail in any way; the legacy exporter gets its chance
        dynamo_error = _reason(exc)
    buffer = io.BytesIO()
    try:
        with _quiet():
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=OPSET,
            )
    except Exception as exc:
        legacy_error = _reason(exc)
        raise ExportFailed(f"torch.onnx could not export it (dynamo: {dynamo_error}; legacy: {legacy_error})") from exc
    return buffer.getvalue(), f"legacy torch.onnx exporter (the dynamo exporter failed: {dynamo_error})"
