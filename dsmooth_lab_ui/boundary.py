"""One error boundary around each page and the sidebar: a failure becomes a message, never a dead session.

Without it, an exception in shared code (the sidebar draws on every page) would replace every page
with a traceback until a reload, and a reload loses the session's results.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import streamlit as st


def guarded(body: Callable[[], object], where: str) -> None:
    """Run ``body``; on an error show what failed and keep going (st.stop and reruns pass through)."""
    try:
        body()
    except Exception as exc:  # Streamlit's stop and rerun signals are BaseExceptions and are not caught
        st.error(
            f"{where} failed: {type(exc).__name__}: {exc}. The session and its results are kept; "
            "change the input that caused it, or go to another page.",
            icon=":material/error:",
        )
        with st.expander("Technical details"):
            st.code("".join(traceback.format_exception(exc)), language="text")
