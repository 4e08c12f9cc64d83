"""The 2-D world: the three methods' certificates where they can be seen, in the plane.

The plane is the unit square, a point is a (1, 1, 2) image, and the same ``dsmooth_core`` noises and
``certify`` as on images draw and certify it (see ``dsmooth_lab_ui.world_2d``).
"""

from __future__ import annotations

import streamlit as st

from dsmooth_lab_ui import nav, world_2d, world_2d_view

nav.ensure_app()
st.title("2-D world")
st.write(
    "Here the input space is the plane, so the certified regions can be seen whole. Each chart colours the "
    "plane by P(class 1) under its noise (white where the two classes tie): the base classifier f, then f "
    "smoothed by RandSmooth's N(0, sigma^2 I), LSmooth's Laplace noise and DSmooth's N(0, sigma^2 St). "
    "A point's certificate is a ball of each method's own metric: a disc (l2), a diamond (l1), an ellipse "
    "(Mahalanobis of St). The radii are in different metrics, so compare the shapes, not the numbers."
)
current = world_2d_view.world_controls()
sigma = st.slider(
    "sigma (per-coordinate standard deviation, plane units; LSmooth matches its variance)",
    0.02,
    0.3,
    world_2d_view.DEFAULT_SIGMA,
    step=0.01,
    key="world_sigma",
)
covariance, cloud = world_2d_view.covariance_controls(current)
point = world_2d_view.point_controls()
n, alpha, seed = world_2d_view.certificate_controls()
world_2d_view.charts(current, world_2d.noises(float(sigma), covariance), point, n, alpha, seed, cloud)
st.caption(
    f"Regions: {world_2d_view.GRID_DRAWS} noise draws per cell on a {world_2d_view.GRID_SIZE} x "
    f"{world_2d_view.GRID_SIZE} grid (a Monte Carlo estimate); the nearest other-class cell is measured on "
    "that estimate of the smoothed classifier, in the method's metric. Certificates use their own n0 = "
    f"{world_2d_view.N0} + n draws. DSmooth's St is the covariance scaled to determinant 1, so its ellipse has "
    "the area of RandSmooth's disc at the same R."
)
