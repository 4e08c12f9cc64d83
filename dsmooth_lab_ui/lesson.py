"""The guided lesson: eight steps through the lab, each with one widget, one figure and a few sentences.

Why a module: the page (``pages/lesson.py``) only picks the step; each step here reads the session's
records (the same ones the full pages show), starts the full pages' jobs through
:mod:`dsmooth_lab_ui.submissions`, draws one figure with :mod:`dsmooth_lab_ui.figures` and links to
the full page with the same settings (:func:`dsmooth_lab_ui.links.url_for`). Nothing is certified,
attacked or audited here: the library does it in the background jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from dsmooth_core import Certificate, SmoothingNoise, radius_ceiling
from dsmooth_core.attacks import PRESETS
from dsmooth_core.noise import METHOD_CLASSES, make_noise, method_class
from dsmooth_lab_ui import (
    audit_figures,
    choices,
    compute,
    figures,
    gallery,
    lesson_defaults,
    links,
    nav,
    reports,
    resources,
    state,
    submissions,
    widgets,
)
from dsmooth_lab_ui.images import signed_to_uint8, to_uint8

PAGE = "pages/lesson.py"  # nav.PAGES' first entry
STARTED = "lesson_started"  # the lesson has read its link in this session
STEP = "lesson_step"  # the step shown, 1-based
SIGMA_CHOICES = (0.1, 0.25, 0.5, 1.0)  # among the Noise explorer's levels, so its link can carry them
N_CHOICES = (200, 500, 1000)
VOTE_COUNTS = (100, 200, 500)
SUBTLE_LINF = 8 / 255  # the usual CIFAR-10 budget, chosen because people do not see such changes
PERSIST: Any = "session"  # a step's widget keeps its value while other steps are shown


@dataclass(frozen=True)
class Lesson:
    """What every step works on: the session's model and image, the usable profile and the lesson's settings."""

    model: torch.nn.Module
    image: state.ImageChoice
    x: torch.Tensor
    profile: state.ProfileChoice | None
    why_no_profile: str | None
    settings: lesson_defaults.LessonSettings

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.model.info.class_names)

    def methods(self) -> list[str]:
        """The method keys this image can be certified with (DSmooth needs a usable profile)."""
        return [key for key, cls in METHOD_CLASSES.items() if self.profile is not None or not cls.needs_profile]

    def noise(self, method: str, sigma: float | None = None) -> SmoothingNoise:
        return make_noise(method, self.settings.sigma if sigma is None else sigma, self.covariance)

    @property
    def covariance(self):
        return self.profile.covariance if self.profile is not None else None


# ---------------------------------------------------------------- the lesson's image
def image_options() -> dict[str, Callable[[], state.ImageChoice]]:
    """The images step 1 offers, by caption: the lesson's default, a mistake of the base model, the gallery."""
    options: dict[str, Callable[[], state.ImageChoice]] = {}
    images, _ = resources.cifar10("test")
    if images is not None:
        for index in (lesson_defaults.CIFAR_INDEX, lesson_defaults.CIFAR_MISTAKE):
            if index < len(images.labels):
                choice = choices.cifar_choice(images, index)
                options[choice.caption] = lambda index=index: choices.cifar_choice(resources.cifar10("test")[0], index)
    for sample in gallery.samples():
        options[gallery.choice(sample).caption] = lambda sample=sample: gallery.choice(sample)
    return options


def start() -> list[str]:
    """The first time the lesson opens in a session: a shared link's settings (the session's image is the
    app's default, which is the lesson's own pick: ``choices.default_image``).

    The link is read here too because the app may have read it before this module registered the
    lesson's parameters (its first import in the server's process); returns the notes on dropped values.
    """
    if st.session_state.get(STARTED):
        return []
    st.session_state[STARTED] = True
    if not st.query_params:
        return []
    shown = st.session_state.get(links.NOTES) or (None, [])  # what the app said when it read the link
    return [note for note in links.restore(PAGE) if note not in shown[1]]


def next_step() -> None:
    """``on_click`` of the page's Next button."""
    st.session_state[STEP] = min(int(st.session_state.get(STEP, 1)) + 1, len(STEPS))


def current() -> Lesson | None:
    """The lesson's inputs, or None after saying what is missing."""
    found = nav.model_and_image()
    if found is None:
        return None
    model, image = found
    x = resources.model_input(model, image)
    profile, why = choices.usable_profile(model, x.shape, image)
    sigma = st.session_state.get("lesson_sigma", lesson_defaults.SETTINGS.sigma)
    n = st.session_state.get("lesson_n", lesson_defaults.SETTINGS.n)
    settings = lesson_defaults.SETTINGS._replace(sigma=float(sigma), n=int(n))
    return Lesson(model, image, x, profile, why, settings)


# ---------------------------------------------------------------- links and records
def full_page_link(page: str, label: str, **values: Any) -> None:
    """``st.page_link`` to ``page`` with the session's state and ``values`` (query-parameter names of
    :mod:`links`) in its query string: the full page opens with the step's settings."""
    st.page_link(page, label=label, icon=":material/open_in_new:", query_params=links.params_for(page, **values))


def _certify_values(lesson: Lesson, methods: list[str]) -> dict[str, Any]:
    s = lesson.settings
    return {
        "methods": methods,
        "sigma": s.sigma,
        "n0": s.n0,
        "n": s.n,
        "alpha": s.alpha,
        "batch": s.batch,
        "seed": s.seed,
    }


def _attack_record(lesson: Lesson, preset: str | None = None) -> state.AttackRecord | None:
    """The session's attack on this model and image (with ``preset`` and the lesson's seed, if given)."""
    record: state.AttackRecord | None = state.get(state.ATTACK)
    if record is None or record.model_key != resources.model_key(lesson.model):
        return None
    if preset is not None:
        same = record.config == dict(widgets.config_items(PRESETS[preset]))
        if not same or record.seed != lesson.settings.attack_seed:
            return None
    return record if record.image_id == lesson.image.image_id else None


def _certificates(lesson: Lesson, methods: list[str]) -> list[tuple[SmoothingNoise, Certificate]] | None:
    """The session's certificates when they are exactly these methods with the lesson's settings."""
    record: state.CertifyRecord | None = state.get(state.CERTIFY)
    if record is None or record.model_key != resources.model_key(lesson.model):
        return None
    wanted = {s.method: s for s in submissions.certify_settings(methods, lesson.settings)}
    if record.image_id != lesson.image.image_id or record.settings != wanted:
        return None
    return list(record.results)


def _certify_button(lesson: Lesson, methods: list[str], label: str, key: str) -> None:
    if st.button(label, key=key, type="primary", icon=":material/verified_user:", disabled=not methods):
        settings = submissions.certify_settings(methods, lesson.settings)
        runs = [(s, s.noise(lesson.covariance)) for s in settings]
        submissions.certify(lesson.model, lesson.image, runs, lesson.profile)


def _choose_image(options: dict[str, Callable[[], state.ImageChoice]]) -> None:
    """``on_change`` of step 1's image choice."""
    caption = st.session_state["lesson_image"]
    if caption in options:
        state.put(state.IMAGE, options[caption]())
        state.put(state.IMAGE_ERROR, None)


# ---------------------------------------------------------------- the steps
def step_classifier(lesson: Lesson) -> None:
    options = image_options()
    captions = list(options)
    if lesson.image.caption not in captions:  # an image chosen on the Model & image page
        captions.append(lesson.image.caption)
    st.session_state["lesson_image"] = lesson.image.caption  # the widget follows the session's image
    st.selectbox("Image", captions, key="lesson_image", on_change=_choose_image, args=(options,))
    probabilities = resources.probabilities(lesson.model, lesson.image, lesson.x)
    label = resources.effective_label(lesson.model, lesson.image)
    top = int(probabilities.argmax())
    st.plotly_chart(
        figures.probability_bar(lesson.classes, probabilities, true_label=label),
        key="lesson_probabilities",
        width="stretch",
    )
    if label is None:
        verdict = "This picture has no CIFAR-10 label, so the lab treats the base model's answer as its label."
    elif top == label:
        verdict = "That is right."
    else:
        verdict = f"That is wrong: the true class is {lesson.classes[label]}."
    st.write(
        f"The base classifier (a small ResNet-20 trained on CIFAR-10) says **{lesson.classes[top]}** with "
        f"{probabilities[top]:.0%} softmax probability. {verdict} A softmax score is not a "
        "guarantee: a classifier can be confidently wrong, and a tiny change of the pixels can change its answer. "
        "Pick another image to see a mistake."
    )
    full_page_link(nav.MODEL_IMAGE, "Open the Model & image page with this image")


def step_attack(lesson: Lesson) -> None:
    preset = st.selectbox(
        "Attack budget (preset)",
        list(PRESETS),
        index=list(PRESETS).index(lesson.settings.attack_preset),
        key="lesson_attack_preset",
        persist_state=PERSIST,
        help="reachable: l_inf 2/255; conventional: 8/255; paper: 0.5 (very large).",
    )
    if st.button("Run the attack", key="lesson_attack_run", type="primary", icon=":material/bolt:"):
        submissions.attack(lesson.model, lesson.image, PRESETS[preset], lesson.settings.attack_seed)
    record = _attack_record(lesson, preset)
    if record is None:
        st.caption("Press the button: Square Attack (queries only) then one FGSM step, seed 0.")
    else:
        result = record.result
        amplified, factor = signed_to_uint8(record.perturbation)
        clean, adversarial = int(result.clean_pred[0]), int(result.adv_pred[0])
        st.plotly_chart(
            figures.image_strip(
                [to_uint8(result.clean[0]), to_uint8(result.adversarial[0]), amplified],
                [
                    f"original: {lesson.classes[clean]}",
                    f"attacked: {lesson.classes[adversarial]}",
                    f"change x{factor:.1f}",
                ],
            ),
            key="lesson_attack_images",
            width="stretch",
        )
        fooled = "fools" if bool(result.success[0]) else "does not fool"
        if clean != record.label:
            fooled += " (it was wrong before the attack)"
        linf = float(result.linf[0])
        subtle = ", below what a person notices" if linf <= SUBTLE_LINF else ""
        st.write(
            f"The attack {fooled} the base model: it now says **{lesson.classes[adversarial]}**. No pixel moved "
            f"by more than {linf * 255:.1f}/255 (l2 length {float(result.l2[0]):.3f}){subtle}. Randomized "
            "smoothing answers such attacks with a guarantee instead of a hope."
        )
    full_page_link(
        nav.ATTACK,
        "Open the Attack page with these settings",
        preset=preset,
        seed=lesson.settings.attack_seed,
    )


def step_noise(lesson: Lesson) -> None:
    sigma = st.select_slider(
        "Noise level sigma (used by the next steps)",
        SIGMA_CHOICES,
        value=lesson.settings.sigma,
        key="lesson_sigma",
        persist_state=PERSIST,
    )
    methods = lesson.methods()
    pictures = [to_uint8(lesson.x)] + [
        to_uint8(lesson.x + compute.noise_sample(lesson.noise(m, sigma), tuple(lesson.x.shape), lesson.settings.seed))
        for m in methods
    ]
    titles = ["clean"] + [f"{method_class(m).name}, sigma = {sigma:g}" for m in methods]
    st.plotly_chart(figures.image_strip(pictures, titles), key="lesson_noise_images", width="stretch")
    st.write(
        "A smoothed classifier never looks at the image alone: it asks the base model about many noisy copies "
        "x + e. sigma is the noise's standard deviation per pixel, in [0, 1] pixel units; the larger it is, "
        "the further a certificate can reach, and the harder the base model's task (the bundled model was "
        "trained on noisy copies at sigma 0.12, 0.25 and 0.5). "
        "RandSmooth adds Gaussian noise, LSmooth Laplace noise of the same variance, DSmooth Gaussian noise "
        "stretched along the directions attacks use."
    )
    full_page_link(
        nav.NOISE,
        "Open the Noise explorer with this noise level",
        sigmas=[0.0, sigma],
        seed=lesson.settings.seed,
    )


def step_votes(lesson: Lesson) -> None:
    count = st.select_slider(
        "Noisy copies to vote", VOTE_COUNTS, value=200, key="lesson_votes_count", persist_state=PERSIST
    )
    noises = [lesson.noise(m) for m in lesson.methods()]
    if st.button("Count the votes", key="lesson_votes_run", type="primary", icon=":material/how_to_vote:"):
        s = lesson.settings
        submissions.votes(lesson.model, lesson.image, noises, s.sigma, int(count), s.batch, s.seed)
    record = state.get(state.NOISE_VOTES)
    fresh = (
        record
        and record["model_key"] == resources.model_key(lesson.model)
        and record["image_id"] == lesson.image.image_id
        and record["sigma"] == lesson.settings.sigma
        and record["count"] == count
    )
    if not fresh:
        st.caption(f"Press the button: {count} noisy copies per method at sigma = {lesson.settings.sigma:g}.")
    else:
        counts = {name: r["counts"] for name, r in record["results"].items()}
        st.plotly_chart(
            figures.vote_histogram(counts, lesson.classes, title=f"Votes over {count} noisy copies"),
            key="lesson_votes_histogram",
            width="stretch",
        )
        tops = ", ".join(
            f"{name}: {lesson.classes[int(c.argmax())]} ({int(c.max())}/{count})" for name, c in counts.items()
        )
        base = int(resources.probabilities(lesson.model, lesson.image, lesson.x).argmax())
        winners = {int(c.argmax()) for c in counts.values()}
        differs = (
            f" Here the vote differs from the base model's answer on the clean image ({lesson.classes[base]}): "
            "the smoothed classifier is a classifier of its own."
            if winners != {base}
            else ""
        )
        st.write(
            f"Each noisy copy is one vote of the base model ({tops}). The smoothed classifier answers with the "
            "class that wins the vote; the larger its share, the more the image can move before the vote "
            f"could turn. That share, bounded from below, is what a certificate is made of.{differs}"
        )
    full_page_link(
        nav.NOISE,
        "Open the Noise explorer's vote count",
        sigmas=[0.0, lesson.settings.sigma],
        votes_sigma=lesson.settings.sigma,
        draws=int(count),
        votes_seed=lesson.settings.seed,
        votes_batch=lesson.settings.batch,
    )


def step_certificate(lesson: Lesson) -> None:
    st.select_slider(
        "Noise draws n for the estimate", N_CHOICES, value=lesson.settings.n, key="lesson_n", persist_state=PERSIST
    )
    s = lesson.settings  # its n is this widget's value (see current)
    noise = lesson.noise("randsmooth")
    ceiling = radius_ceiling(noise, s.n, s.alpha)
    _certify_button(lesson, ["randsmooth"], "Certify with RandSmooth", "lesson_certify_one")
    results = _certificates(lesson, ["randsmooth"])
    if results is None:
        st.caption(f"Press the button: n0 = {s.n0} draws pick the class, n = {s.n} fresh ones bound its share.")
    else:
        _, cert = results[0]
        st.plotly_chart(
            figures.vote_histogram(
                {noise.name: cert.counts_estimation}, lesson.classes, title=f"The {s.n} estimation votes"
            ),
            key="lesson_certificate_votes",
            width="stretch",
        )
        if cert.abstained:
            st.write(
                f"No class wins clearly enough: with probability 1 - alpha = {1 - s.alpha:g} its share is not "
                "above 1/2, so RandSmooth abstains and promises nothing. Try a smaller sigma."
            )
        else:
            st.write(
                f"RandSmooth certifies **{lesson.classes[cert.prediction]}** with radius R = {cert.radius:.3f} (l2). "
                f"From {cert.counts_estimation[cert.prediction]} of {s.n} votes, a noisy copy is classified so "
                f"with probability at least p_lower = {cert.p_lower:.3f}, and then no perturbation of l2 length "
                "below R = sigma Phi^-1(p_lower) can change the smoothed classifier's answer. The promise fails "
                f"with probability at most alpha = {s.alpha:g} (bad luck in the draws). With n = {s.n} draws no "
                f"radius can exceed {ceiling:.3f}: more draws, a larger possible radius."
            )
    full_page_link(
        nav.CERTIFY, "Open the Certify page with this certificate", **_certify_values(lesson, ["randsmooth"])
    )


def step_methods(lesson: Lesson) -> None:
    available = lesson.methods()
    names = {method_class(m).name: m for m in available}
    chosen = st.multiselect("Methods", list(names), default=list(names), key="lesson_methods", persist_state=PERSIST)
    methods = [names[name] for name in chosen if name in names]
    if lesson.profile is None:
        st.info(f"DSmooth is unavailable: {lesson.why_no_profile}.", icon=":material/info:")
    _certify_button(lesson, methods, "Certify with these methods", "lesson_certify_all")
    results = _certificates(lesson, methods) if methods else None
    if results is None:
        st.caption("Press the button: each method starts from the same seed and the same settings.")
    else:
        rows = reports.comparison_rows(
            results, None, lesson.x.numel(), resources.effective_label(lesson.model, lesson.image)
        )
        st.plotly_chart(figures.guarantee_bars(rows), key="lesson_guarantees", width="stretch")
        own = "; ".join(
            f"{noise.name} R = {cert.radius:.3f} ({noise.metric_label})" for noise, cert in reports.ordered(results)
        )
        st.write(
            f"Each method certifies a ball in its own metric: {own}. These numbers cannot be ranked: an l1 radius, "
            "an l2 radius and a Mahalanobis radius measure different neighbourhoods (a Mahalanobis ball reaches "
            "further along the directions DSmooth's noise is stretched in and less far across them; its radius "
            "is not an l2 guarantee). The bars restate every region in the same metric: the l2 and l1 balls "
            "each one contains."
        )
    full_page_link(nav.CERTIFY, "Open the Certify page with these methods", **_certify_values(lesson, methods))


def step_region(lesson: Lesson) -> None:
    whole = st.toggle(
        "Show the whole regions",
        key="lesson_region_whole",
        persist_state=PERSIST,
        help="Off: zoom on the attack point.",
    )
    methods = lesson.methods()
    attack = _attack_record(lesson)
    results = _certificates(lesson, methods)
    if attack is None:
        st.caption("Run the attack first (step 2): this step places its perturbation among the regions.")
    if results is None:
        st.caption("Certify with every method first (step 6).")
        _certify_button(lesson, methods, "Certify with every method", "lesson_certify_region")
    if attack is not None and results is not None:
        fig, _ = reports.slice_figure(results, attack.perturbation, tuple(lesson.x.shape), zoom=not whole)
        st.plotly_chart(fig, key="lesson_region_slice", width="stretch")
        rows = reports.comparison_rows(
            results, attack.perturbation, lesson.x.numel(), resources.effective_label(lesson.model, lesson.image)
        )
        verdicts = "; ".join(
            f"{row['method']}: the attack is {row['attack size (own metric)']:.3g} away in {row['own metric']} "
            f"against R = {row['R (own metric)']:.3g}, {'inside' if row['attack inside region'] else 'outside'}"
            for row in rows
        )
        st.write(
            f"The picture cuts image space along the attack's perturbation: {verdicts}. Only a perturbation "
            "inside a region is covered by that method's promise; outside, the certificate says nothing, "
            "whatever the smoothed classifier happens to answer there."
        )
    full_page_link(nav.CERTIFY, "Open the Certify page with this comparison", **_certify_values(lesson, methods))


def step_audit(lesson: Lesson) -> None:
    methods = lesson.methods()
    results = _certificates(lesson, methods)
    certified = [noise for noise, cert in results or [] if not cert.abstained]
    if not certified:
        st.caption("Certify with every method first (step 6); an abstention promises nothing to audit.")
        _certify_button(lesson, methods, "Certify with every method", "lesson_certify_audit")
        full_page_link(nav.CERTIFY, "Open the Certify page", **_certify_values(lesson, methods))
        return
    by_name = {noise.name: noise for noise in certified}
    name = st.selectbox("Certificate to attack", list(by_name), key="lesson_audit_method", persist_state=PERSIST)
    noise = by_name[name]
    record: state.CertifyRecord = state.get(state.CERTIFY)
    if st.button("Try to break the promise", key="lesson_audit_run", type="primary", icon=":material/gpp_maybe:"):
        submissions.run_audit(lesson.model, lesson.x, record, noise)
    view = (state.get(state.AUDIT) or {}).get(name)
    if view is None or view.certificate != dict(record.results)[noise] or view.image_id != lesson.image.image_id:
        st.caption("Press the button: PGD on the smoothed classifier, inside the certificate's own metric.")
    else:
        result = view.result
        st.plotly_chart(audit_figures.bounds_chart(result), key="lesson_audit_chart", width="stretch")
        if result.violated:
            outcome = "found a change of the smoothed answer inside R: the certificate is refuted"
        elif result.inconclusive:
            outcome = f"could not look ({result.reason})"
        else:
            metric = method_class(result.method).metric_label
            outcome = f"found nothing inside R (it searched up to {result.searched_up_to:.3g}, {metric})"
        st.write(
            f"The audit attacks the smoothed classifier itself and {outcome}. A success would be an upper "
            "bound on the true robust radius, the certificate is a lower bound; between them lies what nobody "
            "knows. Finding nothing never proves a certificate: a stronger attack might succeed."
        )
    full_page_link(nav.CERTIFY, "Open the Certify page's audit", **_certify_values(lesson, methods))


@dataclass(frozen=True)
class Step:
    title: str
    show: Callable[[Lesson], None]


STEPS: tuple[Step, ...] = (
    Step("The base classifier and its mistakes", step_classifier),
    Step("An attack that fools it", step_attack),
    Step("Noise at several sigma", step_noise),
    Step("Votes under noise", step_votes),
    Step("One certificate and what its radius promises", step_certificate),
    Step("Three methods, three metrics", step_methods),
    Step("The certified regions against the actual attack", step_region),
    Step("An audit that tries to break the promise", step_audit),
)


# The lesson's own state in its URL: the model, the image, the step and each step's widget.
links.register(
    PAGE,
    links.MODEL,
    links.IMAGE,
    links.Fields(
        (
            links.Param("step", STEP, links.integer(1, len(STEPS))),
            links.Param("preset", "lesson_attack_preset", links.one_of(PRESETS)),
            links.Param("sigma", "lesson_sigma", links.float_of(SIGMA_CHOICES)),
            links.Param("draws", "lesson_votes_count", links.one_of(VOTE_COUNTS)),
            links.Param("n", "lesson_n", links.one_of(N_CHOICES)),
        )
    ),
)
