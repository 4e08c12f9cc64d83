"""Page 2: attack the image with Square Attack then FGSM (the threat DSmooth is shaped by)."""

from __future__ import annotations

import functools

import streamlit as st

from dsmooth_core.settings import result_key
from dsmooth_lab_ui import attack_view, jobs, nav, resources, state, tasks, widgets

JOB = "attack"


def run_attack(model, image: state.ImageChoice, config, seed: int) -> None:
    x = resources.model_input(model, image)
    label = resources.effective_label(model, image)
    is_prediction = label is None
    if label is None:
        label = int(resources.probabilities(model, image, x).argmax())
    key = resources.model_key(model)
    items = widgets.config_items(config)

    def deliver(result) -> None:
        state.put(
            state.ATTACK,
            state.AttackRecord(
                model_key=key,
                image_id=image.image_id,
                label=label,
                label_is_prediction=is_prediction,
                config=dict(items),
                seed=seed,
                result=result,
            ),
        )

    jobs.start(
        JOB,
        "The attack",
        result_key(model.info, image.identity, label, config, seed),
        functools.partial(tasks.attack, model, x, label, config, seed),
        deliver,
        batch=1,
    )


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
        run_attack(current_model, current_image, config, int(seed))
    record = state.get(state.ATTACK)
    if record is not None:
        st.subheader("Result")
        attack_view.show_result(current_model, record, current_image)
        nav.link(nav.CERTIFY, "Next: certify the image and check the attack against each region")
