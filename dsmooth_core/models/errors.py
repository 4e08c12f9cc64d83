"""Errors raised while obtaining a model, kept apart so callers can tell "fetch it" from "fix the file"."""

from __future__ import annotations


class ModelUnavailableError(RuntimeError):
    """The model exists but its weights or code cannot be obtained here (offline, not trained yet)."""


class ModelLoadError(ValueError):
    """A user-supplied model file is malformed, unsafe or does not fit the requested architecture."""
