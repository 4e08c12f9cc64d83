"""DSmooth Lab: the Streamlit entry point.

Builds ``st.navigation`` from the one page list, ``dsmooth_lab_ui.nav.PAGES`` (the pages/ folder is
not scanned), sets the session's defaults (bundled model, a CIFAR-10 test image when the data is
present, the bundled threat profile when it exists), draws the sidebar shared by all pages and shows
the session's background job (``dsmooth_lab_ui.jobs``) above every page. Each page's settings live in
the URL (``dsmooth_lab_ui.links``): restored when a page opens from a link, written back after every run.
Run with ``streamlit run app.py``.
"""

import streamlit as st
import torch

from dsmooth_lab_ui import boundary, choices, jobs, links, nav, sidebar, state, threads

st.set_page_config(page_title="DSmooth Lab", page_icon=":material/verified_user:", layout="wide")

# the page's own torch work (one image's prediction, a region slice) is small: its threads by the
# job rule, set in every run because each run has a new script thread (OpenMP's count is per thread)
boundary.guarded(lambda: torch.set_num_threads(threads.for_batch(1)), "The torch thread setting")
state.init()
jobs.MANAGER.workers.warm()  # the first job's worker process starts now, not when the job does
# a background job that finished since the last run hands over its result
boundary.guarded(jobs.collect, "Storing the finished job's result")
choices.ensure_defaults()

page = st.navigation(nav.navigation_pages())
page_path = links.path_of(page)
side = st.sidebar.empty()
share = st.sidebar.container()  # the page's link, filled after the page has run (so it holds this run's state)
# a page opened from a link takes the link's settings before anything is drawn; notes say what was dropped
for note in links.opened(page_path):
    st.warning(note, icon=":material/link_off:")
# drawn first, so a page that calls st.stop still has its sidebar; each part in an error boundary
boundary.guarded(lambda: sidebar.render(side.container()), "The sidebar")
boundary.guarded(jobs.panel, "The job panel")  # the session's running job, with progress and Cancel, on every page
boundary.guarded(page.run, f"The page {page.title!r}")
boundary.guarded(lambda: sidebar.render(side.container()), "The sidebar")  # again, with what the page changed
boundary.guarded(lambda: links.sync(page_path), "Writing the page's link")  # the address bar holds the link
boundary.guarded(lambda: links.sidebar_control(page_path, share), "The page's link")
