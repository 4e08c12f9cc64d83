"""The app's pages, declared once: their paths, titles and icons (app.py builds the navigation from them).

Pages link to each other through the same constants, so a renamed page cannot leave a dead link.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import urlsplit

import streamlit as st
from streamlit.errors import StreamlitAPIException

from dsmooth_lab_ui import choices, resources, state

MODEL_IMAGE = "pages/model_image.py"
ATTACK = "pages/attack.py"
PROFILE = "pages/threat_profile.py"
NOISE = "pages/noise_explorer.py"
CERTIFY = "pages/certify.py"
EXPERIMENTS = "pages/experiments.py"
ABOUT = "pages/about.py"
WORLD = "pages/world_2d.py"


class NavPage(NamedTuple):
    path: str
    title: str
    icon: str


# The navigation's order; the first page is the one the app opens.
PAGES: tuple[NavPage, ...] = (
    NavPage("pages/lesson.py", "Start here", ":material/school:"),
    NavPage(MODEL_IMAGE, "Model & image", ":material/image_search:"),
    NavPage(ATTACK, "Attack", ":material/bolt:"),
    NavPage(PROFILE, "Threat profile", ":material/scatter_plot:"),
    NavPage(NOISE, "Noise explorer", ":material/grain:"),
    NavPage(CERTIFY, "Certify", ":material/verified_user:"),
    NavPage(EXPERIMENTS, "Experiments", ":material/science:"),
    NavPage(WORLD, "2-D world", ":material/grid_on:"),
    NavPage(ABOUT, "About", ":material/menu_book:"),
)
TITLES = {path: title for path, title, _ in PAGES}
ICONS = {path: icon for path, _, icon in PAGES}


def navigation_pages() -> list[st.Page]:
    """The ``st.Page`` entries for ``st.navigation``, in PAGES order (the pages/ folder is not scanned)."""
    return [st.Page(page.path, title=page.title, icon=page.icon, default=i == 0) for i, page in enumerate(PAGES)]


def link(page: str, label: str | None = None) -> None:
    st.page_link(page, label=label or f"Go to {TITLES[page]}", icon=ICONS[page])


def need(message: str, page: str, label: str | None = None) -> None:
    """Say what to do first and link to the page where it is done."""
    st.info(message, icon=":material/info:")
    link(page, label)


PAGE_PARAM = "page"  # a page's URL path: app.py switches to it (a link that reached the wrong page on the way)


def handover_params() -> dict[str, str]:
    """The URL's parameters plus the page it asked for, for a page that hands over to app.py.

    On a server's very first run, a link to a page runs that page's file alone (Streamlit's legacy
    multipage mode) and :func:`ensure_app` switches to app.py, which would open the default page.
    """
    stem = urlsplit(st.context.url or "").path.rstrip("/").rpartition("/")[2]
    params = {key: st.query_params[key] for key in st.query_params}  # the last value of a repeated key
    return {**params, **({PAGE_PARAM: stem} if stem else {})}


def ensure_app() -> None:
    """Call first on every page: make sure app.py has set the session up.

    Streamlit runs a page file without app.py in one case: the very first run after the server
    starts, when the browser asks for a page's URL directly (a ``pages/`` folder next to the main
    script puts Streamlit in its legacy multipage mode until ``st.navigation`` has run once). The
    page then hands over to app.py, which declares the navigation and opens the default page.
    """
    if state.MODEL in st.session_state:
        return
    try:
        st.switch_page("app.py", query_params=handover_params())  # a link's page and settings survive
    except StreamlitAPIException:  # run standalone (no app.py beside it): set the session up here
        state.init()
        choices.ensure_defaults()


def model_and_image() -> tuple[Any, Any] | None:
    """The current model and image, or None after telling the user what to choose first."""
    model = resources.current_model()
    image = state.get(state.IMAGE)
    if model is None:
        need("Choose a model first (the current one could not be loaded).", MODEL_IMAGE)
    elif image is None:
        need("Choose an image first: a CIFAR-10 test image, an ImageNet sample or an upload.", MODEL_IMAGE)
    else:
        return model, image
    return None
