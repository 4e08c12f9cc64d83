"""Page 2: attack the image with Square Attack then FGSM (the threat DSmooth is shaped by)."""

from __future__ import annotations

import functools

import streamlit as st

from dsmooth_core.settings import result_key
from dsmooth_lab_ui import figures, jobs, nav, resources, state, tasks, widgets
from dsmooth_lab_ui.images import signed_to_uint8, to_uint8

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


def show_result(model, record: state.AttackRecord, image: state.ImageChoice) -> None:
    classes = model.info.class_names
    if record.model_key != resources.model_key(model) or record.image_id != image.image_id:
        st.warning(
            "This attack was run on another model or image than the current ones; run it again to update.",
            icon=":material/history:",
        )
    result = record.result
    clean_pred, adv_pred, success = int(result.clean_pred[0]), int(result.adv_pred[0]), bool(result.success[0])
    amplified, factor = signed_to_uint8(record.perturbation)
    fig = figures.image_strip(
        [to_uint8(result.clean[0]), to_uint8(result.adversarial[0]), amplified],
        [
            f"original: {classes[clean_pred]}",
            f"adversarial: {classes[adv_pred]}",
            f"perturbation x{factor:.1f} around grey",
        ],
        title="Original, adversarial and amplified perturbation",
    )
    st.plotly_chart(fig, key="attack_images", width="stretch")
    st.caption(
        f"The perturbation is shown as 0.5 + {factor:.1f} x delta (mid-grey = no change), amplified for "
        "display only. Download the picture as PNG with the camera icon in the chart's toolbar."
    )
    target = f"{classes[record.label]}" + (
        " (the model's own prediction; true label unknown)" if record.label_is_prediction else " (true label)"
    )
    st.markdown(f"Attacked label: **{target}**.")
    if clean_pred != record.label:
        st.info(
            "The model already misclassifies the clean image, so Square Attack stopped at once; only the "
            "FGSM step (if any) moved it.",
            icon=":material/info:",
        )
    c = st.columns(4)
    c[0].metric("Prediction before", classes[clean_pred])
    c[1].metric(
        "Prediction after",
        classes[adv_pred],
        "fooled" if success else "not fooled",
        delta_color="inverse" if success else "normal",
    )
    queries = int(result.queries[0])
    c[2].metric("Queries used", f"{queries:,}", help="Square's model queries, plus 1 for the FGSM gradient.")
    c[3].metric("Seed", record.seed)
    linf, l2, l1 = float(result.linf[0]), float(result.l2[0]), float(result.l1[0])
    n = st.columns(3)
    n[0].metric("l_inf norm of delta", f"{linf:.4f} ({linf * 255:.1f}/255)")
    n[1].metric("l2 norm of delta", f"{l2:.4f}")
    n[2].metric("l1 norm of delta", f"{l1:.2f}")
    with st.expander("Attack settings used"):
        st.json(record.config)


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
        show_result(current_model, record, current_image)
        nav.link(nav.CERTIFY, "Next: certify the image and check the attack against each region")
