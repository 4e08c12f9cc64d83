"""The Certify page's account of a real attack (docs/MATH.md section 6, "Successful attacks").

"Certified against the attack" alone also counts attacks that failed. Here each method says whether the
image's attack fooled the base model (right on the clean image, wrong on the attacked one), whether the
perturbation lies inside its certificate (own metric), and what the smoothed classifier answers at the
attacked image: PREDICT, run in the certification's own job, and only when the attack was successful.
"""

from __future__ import annotations

import streamlit as st

from dsmooth_core import ABSTAIN, compare
from dsmooth_core.settings import engine_part, result_key
from dsmooth_lab_ui import nav, reports, state

NOT_RUN = "not run"


def attack_key(attack: state.AttackRecord) -> str:
    """The identity of one attack run (model, image, label, threat, seed, forward), as its job keys it."""
    parts = (attack.model_key, attack.image_id, attack.label, attack.config, attack.seed)
    return result_key("attack", *parts, *engine_part(attack.forward))


def base_fooled(attack: state.AttackRecord) -> bool | None:
    """A successful attack: the base model right on the clean image and wrong on the attacked one.
    None when the image has no true label (the attack then only tried to change the model's own answer)."""
    if attack.label_is_prediction:
        return None
    result = attack.result
    return int(result.clean_pred[0]) == attack.label and int(result.adv_pred[0]) != attack.label


def session_attack(model_key: str, image_id: str) -> state.AttackRecord | None:
    """The session's attack, if it was run on this model and image."""
    attack = state.get(state.ATTACK)
    if attack is None or attack.model_key != model_key or attack.image_id != image_id:
        return None
    return attack


def successful_attack(model_key: str, image_id: str, label: int | None) -> state.AttackRecord | None:
    """The session's attack on this model and image if it fooled the base model on the label certified."""
    attack = session_attack(model_key, image_id)
    if attack is None or label is None or attack.label != label or not base_fooled(attack):
        return None
    return attack


def smoothed_answer(prediction: int | None, label: int, classes: tuple[str, ...]) -> str:
    """PREDICT's answer in words: "cat (right)", "abstains", "dog (fooled)"."""
    if prediction is None:
        return NOT_RUN
    if prediction == ABSTAIN:
        return "abstains"
    return f"{classes[prediction]} ({'right' if prediction == label else 'fooled'})"


def outcome_lines(record: state.CertifyRecord, attack: state.AttackRecord, classes: tuple[str, ...]) -> list[str]:
    """Per method, one line: the perturbation against its certificate, and the smoothed classifier at x + delta."""
    attacked = record.attacked
    current = attacked is not None and attack_key(attacked.attack) == attack_key(attack)
    predictions = attacked.predictions if current else {}
    lines = []
    for noise, cert in reports.ordered(record.results):
        check = compare(cert, noise, attack.perturbation, label=attack.label)
        size = f"{noise.metric_label} size {check.distance:.3g} vs R = {cert.radius:.3g}"
        answer = smoothed_answer(predictions.get(noise.name), attack.label, classes)
        lines.append(
            f"**{noise.name}**: perturbation inside the certificate ({size}): {_yes(check.inside)}; "
            f"certified against this attack: {_yes(check.certified)}; "
            f"smoothed classifier at the attacked image: **{answer}**"
        )
    return lines


def _yes(value: bool | None) -> str:
    return "yes" if value else "no"


def section(record: state.CertifyRecord, classes: tuple[str, ...]) -> None:
    """The successful-attack account of the session's attack on the record's image (nothing without one)."""
    attack = session_attack(record.model_key, record.image_id)
    if attack is None or not record.results:
        return
    st.subheader("Did the attack succeed, and does it fool the smoothed classifier?")
    clean, adversarial = int(attack.result.clean_pred[0]), int(attack.result.adv_pred[0])
    fooled = base_fooled(attack)
    if fooled is None:
        st.info(
            "This image has no true label, so whether the attack fooled the base model cannot be judged "
            f"(the base model says {classes[clean]} on the clean image, {classes[adversarial]} on the attacked one).",
            icon=":material/info:",
        )
        return
    why = "" if fooled else " (already wrong on the clean image)" if clean != attack.label else " (still right)"
    st.markdown(
        f"**Attack fooled the base model: {'yes' if fooled else 'no'}**{why}. Base model on the clean image: "
        f"{classes[clean]}; on the attacked image: {classes[adversarial]}; true label: {classes[attack.label]}."
    )
    lines = outcome_lines(record, attack, classes)
    st.markdown("\n".join(f"- {line}" for line in lines))
    if fooled and any(line.endswith(f"**{NOT_RUN}**") for line in lines):
        st.info("Certify again to ask the smoothed classifier at this attacked image.", icon=":material/refresh:")
    elif not fooled:
        st.caption(
            "The smoothed classifier is asked at the attacked image only after a successful attack; a stronger "
            "attack may give one."
        )
        nav.link(nav.ATTACK)
    st.caption(
        "Certified against this attack: the certificate at the clean image names the true label and the "
        "perturbation lies inside its region, where the smoothed classifier is certified to keep that label (the "
        "certificate is wrong with probability at most alpha). The smoothed classifier at the attacked image is "
        "Cohen's PREDICT with the same noise, n and alpha, asked in the certification's job: a Monte Carlo "
        "answer (wrong with probability at most alpha when it does not abstain), not a guarantee."
    )
