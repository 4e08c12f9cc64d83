"""The Attack page's result: original, adversarial and amplified perturbation, predictions and norms.

Why a module: the page gathers the attack's settings and submits the job; what one attack record
looks like is drawn here, every number read from the record and its ``AttackResult``.
"""

from __future__ import annotations

import streamlit as st

from dsmooth_lab_ui import figures, resources, state
from dsmooth_lab_ui.images import signed_to_uint8, to_uint8


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
        "display only. Download the picture as PNG with the camera icon in the chart's toolbar. "
        f"Square's queries ran on {record.forward}, FGSM's gradient on torch."
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
