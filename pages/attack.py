"""Page 2: attack the image with Square Attack then FGSM (the threat DSmooth is shaped by)."""

from __future__ import annotations

import streamlit as st

from dsmooth_lab_ui import attack_view, nav, state, submissions, widgets

nav.ensure_app()
st.title("Attack: Square + FGSM")
st.write(
    "The paper's threat: Square Attack (score-based, l_inf, random squares) followed by one FGSM step. "
    "DSmooth shapes its noise like the perturbations this attack produces on calibration images (Threat "
    "profile page); here you see one such perturbation on the current image."
)
current = nav.model_and_image()
if current is not None:
    current_model, current_image = current
    st.subheader("Settings")
    config = widgets.attack_settings("atk_", "conventional")
    seed = st.columns(3)[0].number_input("Seed", min_value=0, value=0, step=1, key="atk_seed", persist_state="session")
    if st.button("Run the attack", type="primary", disabled=config is None, icon=":material/bolt:"):
        submissions.attack(current_model, current_image, config, int(seed))
    record = state.get(state.ATTACK)
    if record is not None:
        st.subheader("Result")
        attack_view.show_result(current_model, record, current_image)
        nav.link(nav.CERTIFY, "Next: certify the image and check the attack against each region")
