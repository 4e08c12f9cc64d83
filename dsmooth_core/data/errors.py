"""Errors for missing data and bad uploads, carrying messages meant for the person using the app."""

from __future__ import annotations


class DataUnavailableError(RuntimeError):
    """A data set is not on disk and could not be downloaded, or its files are unreadable."""


class UploadError(ValueError):
    """An uploaded image is too large, truncated, corrupt or of an unsupported type."""
