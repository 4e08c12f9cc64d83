"""The base model's prediction on the current image: the image as the model sees it, top class, all classes.

Why a module: the Model & image page gathers the model and the image; this view draws what the
model makes of them, from the cached class probabilities.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from dsmooth_core.contract import NonFiniteLogitsError
from dsmooth_lab_ui import figures, resources, state
from dsmooth_lab_ui.images import to_uint8, upscale

PNG_NOTE = "Download any chart as PNG with the camera icon in its toolbar (top right of the chart)."


def prediction_section(model) -> None:
    image: state.ImageChoice | None = state.get(state.IMAGE)
    st.subheader("Prediction of the base model")
    if image is None:
        st.info("Choose an image above (or upload one) to see the model's prediction.", icon=":material/info:")
        return
    x = resources.model_input(model, image)
    try:
        probs = resources.probabilities(model, image, x)
    except NonFiniteLogitsError as exc:  # a "nan%" prediction would look like a result
        st.error(f"No prediction for this image: {exc}", icon=":material/error:")
        return
    classes = model.info.class_names
    label = resources.effective_label(model, image)
    top = int(np.argmax(probs))
    left, right = st.columns([1, 2])
    with left:
        st.image(upscale(to_uint8(x), max(1, 192 // x.shape[-1])), caption=f"{image.caption}, as the model sees it")
        st.metric("Predicted class", classes[top], f"{probs[top]:.1%} softmax probability", delta_color="off")
        if label is None:
            st.caption("True label unknown for this model: the attack will target the model's prediction.")
        elif top == label:
            st.success(f"Correct: the true class is {classes[label]}.", icon=":material/check_circle:")
        else:
            st.warning(f"Wrong: the true class is {classes[label]}.", icon=":material/close:")
    with right:
        st.plotly_chart(
            figures.probability_bar(classes, probs, true_label=label),
            key="probability_chart",
            width="stretch",
        )
        st.caption(PNG_NOTE)
