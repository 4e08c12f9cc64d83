"""Start here: a guided lesson through the lab in eight steps (dsmooth_lab_ui.lesson holds the steps)."""

from __future__ import annotations

import streamlit as st

from dsmooth_lab_ui import lesson, nav

nav.ensure_app()
st.title("Start here: a guided lesson")
st.write(
    "Eight short steps from a classifier's mistakes to a certificate and an audit that tries to break it. "
    "Each step has one control, one figure and a link to the full page with the same settings."
)
for note in lesson.start():
    st.warning(note, icon=":material/link_off:")
current = lesson.current()
if current is not None:
    titles = [f"{i}. {step.title}" for i, step in enumerate(lesson.STEPS, start=1)]
    st.session_state.setdefault(lesson.STEP, 1)
    number = st.radio(
        "Step",
        range(1, len(titles) + 1),
        format_func=lambda i: titles[i - 1],
        key=lesson.STEP,
        horizontal=True,
        label_visibility="collapsed",
    )
    st.subheader(titles[number - 1])
    lesson.STEPS[number - 1].show(current)
    if number < len(titles):
        st.divider()
        st.button(
            f"Next: {titles[number]}", key="lesson_next", on_click=lesson.next_step, icon=":material/arrow_forward:"
        )
