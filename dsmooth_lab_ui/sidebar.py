"""The sidebar every page shares: device, model, image, threat profile."""

from __future__ import annotations

import streamlit as st
import torch

from dsmooth_lab_ui import resources, state
from dsmooth_lab_ui.images import drawable, to_uint8

PROFILE_FRAGMENT = "dsl_sidebar_profile"  # rerun by the Threat profile page's rank and shrinkage controls


def _profile_line() -> None:
    """A fragment of its own, so a control that changes the profile in use can redraw just this line."""
    profile = state.get(state.PROFILE)
    if profile is None:
        st.markdown("**Threat profile** none (DSmooth needs one)")
    else:
        st.markdown(
            f"**Threat profile** {profile.source}  \nk = {profile.k}, shrinkage = {profile.shrinkage:g}, "
            f"`{profile.content_hash[:10]}`"
        )


def render(container) -> None:
    """Fill ``container`` (a block in st.sidebar) with the session's current choices."""
    with container:
        dev = resources.device()
        note = {"cuda": "GPU", "mps": "Apple GPU", "cpu": "CPU only: keep n small"}.get(dev.type, "")
        st.markdown(f"**Device** `{dev.type}`" + (f" · {note}" if note else ""))
        choice = state.get(state.MODEL)
        model = resources.current_model()
        if dev.type == "cuda":
            st.caption(torch.cuda.get_device_name(0))
            if model is not None:
                batch = resources.suggested_batch(resources.model_key(model), model)
                st.caption(f"Suggested here: n = 100,000 (as in the paper), batch size {batch:,} (fits in memory)")
        if model is None:
            st.markdown(f"**Model** `{choice.name if choice else 'none'}` (not loaded)")
        else:
            info = model.info
            trained = "untrained weights" if info.source == "untrained" else f"weights {info.weights_hash[:10]}"
            st.markdown(f"**Model** `{info.name}`  \n{info.dataset}, input {tuple(info.input_shape)}, {trained}")

        image = state.get(state.IMAGE)
        if image is None:
            st.markdown("**Image** none chosen")
        else:
            st.markdown(f"**Image** {image.caption}")
            st.image(drawable(to_uint8(image.pixels)), width=96)

        st.fragment(key=PROFILE_FRAGMENT)(_profile_line)()

        attack = state.get(state.ATTACK)
        if attack is not None:
            result = attack.result
            st.markdown(
                f"**Attack** {'fooled' if bool(result.success[0]) else 'did not fool'} the model, l2 = "
                f"{float(result.l2[0]):.3g}, l_inf = {float(result.linf[0]):.3g}"
            )
