"""Page 6: the method in brief, the theorems, and what each number on the other pages means."""

from __future__ import annotations

import streamlit as st

from dsmooth_core import IsotropicGaussian, radius_ceiling
from dsmooth_core.tuning import TuningGrid
from dsmooth_lab_ui import bundled_profiles, nav, resources

# The ceiling example: alpha = 10^-3 and n = 10^3, 10^5 draws (powers of ten, written as such in the formula).
CEILING_ALPHA_POWER = -3
CEILING_DRAW_POWERS = (3, 5)


def ceiling_text(power: int) -> str:
    """The Gaussian radius ceiling per sigma at n = 10^power draws, computed by the library, as LaTeX."""
    ceiling = radius_ceiling(IsotropicGaussian(1.0), 10**power, 10.0**CEILING_ALPHA_POWER)
    return rf"{ceiling:.2f}\,\sigma \text{{ for }} n = 10^{power}"


def bundled_profiles_section() -> None:
    """The two bundled profiles, every number read from their files (they change when a profile is rebuilt)."""
    tuned, tuned_problem = bundled_profiles.read(resources.BUNDLED_PROFILE)
    paper, paper_problem = bundled_profiles.read(resources.BUNDLED_PAPER_PROFILE)
    for problem in (tuned_problem, paper_problem):
        if problem:
            st.info(problem, icon=":material/info:")
    lines = []
    if tuned is not None:
        lines.append(f"- **Tuned (the default)**: {bundled_profiles.tuned_text(resources.BUNDLED_PROFILE.name, tuned)}")
    if paper is not None:
        text = bundled_profiles.paper_text(resources.BUNDLED_PAPER_PROFILE.name, paper, tuned)
        lines.append(f"- **The paper's setting**: {text} One click away on the Threat profile page, for comparison.")
    st.markdown("\n".join(lines))
    st.markdown(
        "Why the tuned one is the default, and what it does and does not buy against isotropic RandSmooth: "
        'docs/REPRODUCTION.md, "What anisotropic smoothing needs".'
    )


nav.ensure_app()
st.title("About DSmooth Lab")
st.write(
    "Randomized smoothing turns any classifier f into a smoothed classifier g that votes over noisy copies "
    "of its input, and proves that g's answer cannot change inside a region around the image. DSmooth shapes "
    "the noise like the perturbations a real attack produces; RandSmooth and LSmooth use isotropic noise."
)

st.subheader("The smoothed classifier")
st.latex(r"g(x) = \arg\max_c \; \mathbb{P}\big(f(x + \varepsilon) = c\big), \qquad \varepsilon \sim P")
st.write(
    "Pixels are in [0, 1]; the noise is added without clipping (the guarantee is for the unclipped sum). "
    "With p_A a lower confidence bound on the top class's probability, a certificate exists only when p_A > "
    "1/2."
)

st.subheader("Three certificates")
st.markdown("**RandSmooth** (Cohen et al., 2019): isotropic Gaussian, certified in l2.")
st.latex(
    r"\varepsilon \sim \mathcal{N}(0, \sigma^2 I), \qquad R_{2} = \sigma\, \Phi^{-1}(\underline{p_A}), "
    r"\qquad \|\delta\|_2 < R_2 \Rightarrow g(x+\delta) = g(x)"
)
st.markdown("**LSmooth** (Teng et al., 2020): iid Laplace with scale lambda, certified in l1.")
st.latex(
    r"\varepsilon_i \sim \mathrm{Laplace}(0, \lambda), \qquad R_{1} = -\lambda \ln\!\big(2 (1 - "
    r"\underline{p_A})\big), \qquad \|\delta\|_1 < R_1 \Rightarrow g(x+\delta) = g(x)"
)
st.caption(
    "Teng et al.'s bound is max{lambda/2 ln(p_A/p_B), -lambda ln(1 - p_A + p_B)}; with p_B = 1 - p_A the "
    "second term is the larger. The app matches variances: lambda = sigma / sqrt 2, so all three methods add "
    "noise with the same per-pixel variance sigma^2."
)
st.markdown(
    "**DSmooth** (the paper): anisotropic Gaussian shaped by the threat, certified in the Mahalanobis metric of St."
)
st.latex(
    r"S_t = \frac{S}{\det(S)^{1/d}}, \qquad \varepsilon \sim \mathcal{N}(0, \sigma^2 S_t), \qquad R_{M} = "
    r"\sigma\, \Phi^{-1}(\underline{p_A})"
)
st.latex(r"\sqrt{\delta^\top S_t^{-1} \delta} < R_M \;\Rightarrow\; g(x+\delta) = g(x)")
st.write(
    "Why it holds: with St = L L^T, smoothing f with N(0, sigma^2 St) is smoothing h(u) = f(x + L u) with "
    "N(0, sigma^2 I), and Cohen's l2 ball in u maps to the ellipsoid delta = L u. Since det St = 1, the "
    "ellipsoid has the volume of the l2 ball of radius R_M, with semi-axes R_M sqrt(mu_i) (mu_i the "
    "eigenvalues of St): it contains the l2 ball of radius R_M sqrt(mu_min) and no more. A Mahalanobis "
    "radius is not an l2 guarantee."
)

st.subheader("The threat covariance S (probabilistic PCA)")
st.write(
    "S is the covariance of Square + FGSM perturbations gathered on calibration images disjoint from the "
    "certified ones. With N perturbations in d dimensions the sample covariance is singular (rank < N), so "
    "the app keeps the top k directions and spreads the remaining variance evenly:"
)
st.latex(
    r"S_k = U_k \,\mathrm{diag}(\lambda_1 - \rho^2, \dots, \lambda_k - \rho^2)\, U_k^\top + \rho^2 I, "
    r"\qquad \rho^2 = \frac{\operatorname{tr}(S) - \sum_{i \le k} \lambda_i}{d - k}"
)
st.latex(r"\log\det S_k = \sum_{i \le k} \ln \lambda_i + (d - k) \ln \rho^2")
st.write(
    "Shrinkage gamma in [0, 1] mixes the eigenvalues and the residual with the mean variance tr(S)/d; gamma "
    "= 1 is exactly RandSmooth. Sampling costs O(d k) per draw and no d x d matrix is ever formed."
)
st.write(
    "Normalization. The paper's St = S / det(S)^(1/d) (**det**) matches the volume of N(0, sigma^2 I). The "
    "lab also offers St = S d / tr(S) (**trace**), which matches its noise energy: the same expected squared "
    "norm per draw. By the arithmetic-geometric mean inequality det St <= 1 then, so the trace-normalized "
    "ellipsoid is smaller than the l2 ball of the same R. Either is a valid certificate in its own St's "
    "metric. Which normalization, rank and shrinkage suit a model is tuned on calibration images held out "
    "from the fit (never on test images), and only settings with an axis ratio sqrt(mu_max / mu_min) of at "
    f"least {TuningGrid().min_axis_ratio:g} may win, so tuning cannot turn DSmooth into RandSmooth by the back "
    "door."
)

st.subheader("Which DSmooth the lab starts with")
bundled_profiles_section()

st.subheader("The Monte Carlo certificate (DCERT, Cohen's CERTIFY)")
st.latex(
    r"\hat c_A = \arg\max_c \,\#\{i \le n_0 : f(x + \varepsilon_i) = c\}, \qquad \underline{p_A} = "
    r"\mathrm{Beta}^{-1}(\alpha;\; n_A,\; n - n_A + 1)"
)
st.write("The largest radius n draws can certify (all n votes for the top class) is reached at")
ceilings = ",\\ ".join(ceiling_text(power) for power in CEILING_DRAW_POWERS)
st.latex(
    r"\underline{p_A}^{\max} = \alpha^{1/n}, \qquad R^{\max} = \sigma\,\Phi^{-1}(\alpha^{1/n})\ \ "
    rf"(\text{{Gaussian: }} {ceilings},\ \alpha = 10^{{{CEILING_ALPHA_POWER}}})"
)

st.subheader("What the numbers mean")
st.markdown(
    """
- **p_lower** (p_A): a lower bound, holding with probability at least 1 - alpha, on the probability that
  the base model returns the selected class under noise. It is computed from the n estimation draws.
- **alpha**: the probability that a returned certificate is wrong (because of Monte Carlo bad luck). Smaller
  alpha means more caution and smaller radii.
- **ABSTAIN**: p_lower <= 1/2, so no class can be certified; the smoothed classifier declines to answer
  rather than risk being wrong.
- **Radius R**: every perturbation smaller than R *in the method's own metric* (l2, l1 or Mahalanobis of St)
  leaves the smoothed prediction unchanged, with probability at least 1 - alpha over the sampling.
- **Radius ceiling**: the radius when all n votes agree, i.e. the most that n draws can certify at this alpha.
  A radius equal to its ceiling is limited by n, not by the model.
- **n0 / n**: draws used to pick the class / to bound its probability. n0 can be small; n sets the ceiling.
- **Certified against the attack**: the method returns the true label and the actual attack perturbation
  lies inside its certified region. It is the one number that compares all three on the same threat.
"""
)
st.subheader("Auditing a certificate: what it can and cannot show")
st.write(
    "A certificate is a lower bound on the smoothed classifier's robust radius; a perturbation that provably "
    "changes the smoothed prediction is an upper bound. The audit on the Certify page searches the certified "
    "region, in the certificate's own metric, with PGD on the soft smoothed classifier (the average softmax "
    "over noise draws), judges each candidate with PREDICT on fresh draws (family-wise level alpha), and "
    "bisects the budget down to the smallest distance at which the attack succeeded: the empirical bound."
)
st.latex(r"R_{\text{certified}} \;\le\; R_{\text{robust}}(x) \;\le\; R_{\text{empirical}}")
st.markdown(
    """
- **Violation** (empirical bound < R): a perturbation inside the certified region changed the prediction.
  The audit **refutes** the certificate (unless this was one of its own alpha failures): look for a bug, a
  float issue or a wrong model wrapper.
- **Consistent** (nothing found inside R): the attack failed. This **never proves** the certificate; a
  stronger attack might succeed. An audit can refute a certificate, it can never confirm one.
"""
)
st.subheader("Data caveat")
st.write(
    "The offline CIFAR-10 copy used on machines without internet went through JPEG compression (about 30 dB "
    "PSNR): accuracies measured on it are a few points below published CIFAR-10 numbers."
)
nav.link(nav.MODEL_IMAGE, "Start: choose a model and an image")
