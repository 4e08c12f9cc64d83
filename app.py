"""DSmooth Lab: the Streamlit entry point (placeholder until the app's pages land)."""

import streamlit as st

st.set_page_config(page_title="DSmooth Lab", layout="wide")
st.title("DSmooth Lab")
st.write("Certified robustness by randomized smoothing: DSmooth, RandSmooth and LSmooth side by side.")
