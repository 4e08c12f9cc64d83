"""User programs (TorchScript, torch.export) travel to a worker process as their saved bytes.

Why: pickle refuses these modules, and work that cannot be pickled has to run in a thread of the
server, where a model that never returns cannot be stopped (see :mod:`dsmooth_lab_ui.watchdog`).
Saved as a program file and loaded again in the worker, the same program runs in a process that
Cancel can end. The user vouched for the code when loading it (``trust_code``), and the worker
runs it with the same trust.

A TorchScript module is saved again with ``torch.jit.save``. A torch.export model keeps only the
program's module, which cannot be saved, so the file it was loaded from is remembered
(:func:`remember`) when it is loaded.
"""

from __future__ import annotations

import io
import pickle
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import nn

from dsmooth_core.models.user import ExportedNet

_EXPORT_FILES: WeakKeyDictionary[ExportedNet, bytes] = WeakKeyDictionary()
_SCRIPT_FILES: WeakKeyDictionary[torch.jit.ScriptModule, bytes] = WeakKeyDictionary()


def carries_program(model: nn.Module) -> bool:
    """Whether ``model`` runs user code (a TorchScript or torch.export program), which may never return."""
    return any(isinstance(m, (torch.jit.ScriptModule, ExportedNet)) for m in model.modules())


def remember(model: nn.Module, data: bytes) -> None:
    """Keep the file ``model`` was loaded from when it holds a torch.export program (else nothing to do)."""
    for module in model.modules():
        if isinstance(module, ExportedNet):
            _EXPORT_FILES[module] = data


def reduce(obj: Any) -> tuple | None:
    """How pickle rebuilds ``obj`` from its program bytes, or ``None`` when it is not a program module."""
    if isinstance(obj, torch.jit.ScriptModule):
        data = _SCRIPT_FILES.get(obj)
        if data is None:
            buffer = io.BytesIO()
            torch.jit.save(obj, buffer)
            data = _SCRIPT_FILES.setdefault(obj, buffer.getvalue())
        return load_torchscript, (data, _state(obj))
    if isinstance(obj, ExportedNet):
        data = _EXPORT_FILES.get(obj)
        if data is None:
            raise pickle.PicklingError("a torch.export model whose program file was not remembered")
        return load_export, (data, _state(obj))
    return None


def _state(module: nn.Module) -> tuple[str, bool, bool]:
    """Device, train flag and whether the parameters take gradients: what loading does not restore."""
    tensors = [*module.parameters(), *module.buffers()]
    device = str(tensors[0].device) if tensors else "cpu"
    return device, module.training, any(p.requires_grad for p in module.parameters())


def _restore(module: nn.Module, state: tuple[str, bool, bool]) -> nn.Module:
    device, training, grad = state
    module.to(device)
    module.train(training)
    for parameter in module.parameters():  # ScriptModules refuse module.requires_grad_
        parameter.requires_grad_(grad)
    return module


def load_torchscript(data: bytes, state: tuple[str, bool, bool]) -> nn.Module:
    """The TorchScript module saved in ``data`` (called by pickle in the worker)."""
    return _restore(torch.jit.load(io.BytesIO(data), map_location=state[0]), state)


def load_export(data: bytes, state: tuple[str, bool, bool]) -> nn.Module:
    """The torch.export model saved in ``data``, held as the loader holds it (called by pickle in the worker)."""
    return _restore(ExportedNet(torch.export.load(io.BytesIO(data))), state)
