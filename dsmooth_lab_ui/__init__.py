"""App-side helpers of DSmooth Lab: session state, caching wrappers, figures, sidebar.

The pages gather inputs and draw; ``dsmooth_core`` does the mathematics. Modules here that build
figures or geometry (``figures``, ``slices``, ``images``, ``profile_shape``, ``reports``) are pure functions of their
inputs and never import streamlit, so they can be tested without an app.
"""
