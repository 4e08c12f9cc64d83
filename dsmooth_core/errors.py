"""The project's own refusal: an input the lab will not work with, and a message saying why."""

from __future__ import annotations


class InputRefused(ValueError):
    """An argument, file or setting is refused before any work is done; the message says what to change."""
