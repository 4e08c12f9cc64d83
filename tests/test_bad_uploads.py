"""The bad-input corpus for uploads: each bad image is refused with its message, each odd but readable
one is read correctly with a note, and no upload (or failure) leaves the app's session unusable."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from dsmooth_core import LowRankCovariance
from dsmooth_core.data import UploadError, read_upload
from dsmooth_core.profiles import ThreatProfile
from dsmooth_lab_ui import nav, sidebar, state
from dsmooth_lab_ui.images import drawable

APP = Path(__file__).resolve().parents[1] / "app.py"
ALL_PAGES = [path for path, _, _ in nav.PAGES]


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _tiff(array: np.ndarray) -> bytes:
    return _encoded(Image.fromarray(array), "TIFF")


def _jpeg() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return _encoded(Image.fromarray(pixels), "JPEG")


def _gif(frames: int) -> bytes:
    images = [Image.new("RGB", (16, 16), (40 * i, 0, 0)) for i in range(frames)]
    return _encoded(images[0], "GIF", save_all=True, append_images=images[1:])


RAMP = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)

REFUSED = {
    "empty": (lambda: b"", "empty"),
    "truncated JPEG (body)": (lambda: _jpeg()[: len(_jpeg()) // 2], "truncated or corrupt"),
    "truncated JPEG (header)": (lambda: _jpeg()[:200], "truncated or corrupt"),
    "truncated JPEG (marker)": (lambda: _jpeg()[:50], "truncated or corrupt|not an image"),
    "int32 TIFF beyond 16 bits": (lambda: _tiff((RAMP * 4e6).astype(np.int32)), "save it as an 8- or 16-bit"),
    "float TIFF with negatives": (lambda: _tiff(RAMP * 2 - 1), "save it as an 8- or 16-bit"),
    "float TIFF with NaN": (lambda: _tiff(np.where(RAMP > 0.5, np.nan, RAMP).astype(np.float32)), "NaN"),
    "1000x1 PNG": (lambda: _encoded(Image.new("RGB", (1000, 1)), "PNG"), "more than 256:1"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_bad_uploads_are_refused_with_their_message(case: str) -> None:
    make, message = REFUSED[case]
    with pytest.raises(UploadError, match=message):
        read_upload(make())


READ_WITH_NOTE = {
    # bytes, expected grey level of the brightest pixel, expected note
    "float TIFF in [0, 1]": (lambda: _tiff(RAMP), 255, "intensities in \\[0, 1\\]"),
    "float TIFF in [0, 255]": (lambda: _tiff(RAMP * 200), 200, "0-255"),
    "16-bit TIFF": (lambda: _tiff((RAMP * 65535).astype(np.uint16)), 255, "16-bit"),
    "int32 TIFF in 16 bits": (lambda: _tiff((RAMP * 65535).astype(np.int32)), 255, "16-bit"),
    "animated GIF": (lambda: _gif(3), 0, "first one is used"),
}


@pytest.mark.parametrize("case", READ_WITH_NOTE, ids=list(READ_WITH_NOTE))
def test_deep_and_animated_images_are_scaled_and_noted(case: str) -> None:
    make, brightest, note = READ_WITH_NOTE[case]
    image, notes = read_upload(make())
    pixels = np.asarray(image)
    assert pixels.dtype == np.uint8 and pixels.shape[-1] == 3
    assert abs(int(pixels.max()) - brightest) <= 1 and any(re.search(note, n) for n in notes), notes
    if "TIFF" in case:  # a ramp stays a ramp: not all black, not all white
        assert pixels.min() <= 1 and len(np.unique(pixels)) > 100


@pytest.mark.parametrize("size", [(200, 1), (1, 200), (256, 1), (1, 1), (32, 32)])
def test_every_accepted_image_has_a_drawable_thumbnail(size: tuple[int, int]) -> None:
    image, _ = read_upload(_encoded(Image.new("RGB", size, (200, 0, 0)), "PNG"))
    picture = drawable(np.asarray(image))
    height, width = picture.shape[:2]
    assert max(height, width) <= 4 * min(height, width)
    assert round(96 * height / width) >= 24  # the sidebar draws it 96 px wide
    assert (picture == [200, 0, 0]).all(axis=-1).sum() == size[0] * size[1]  # the image itself is all there


# --------------------------------------------------------------------------------------------- in the app
def _app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=240).switch_page(nav.MODEL_IMAGE)


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _upload(at: AppTest, name: str, data: bytes) -> None:
    at.radio(key="image_source").set_value("Upload").run()
    next(u for u in at.file_uploader if u.key == "upload_file").upload(name, data, "image/png")
    at.run()


def test_extreme_aspect_upload_is_drawn_on_every_page(app_env: Path) -> None:
    at = _app().run()
    _upload(at, "wide.png", _encoded(Image.new("RGB", (200, 1), (0, 0, 200)), "PNG"))
    _clean(at)
    assert at.session_state[state.IMAGE].pixels.shape == (1, 200, 3)
    for page in ALL_PAGES:
        at.switch_page(page).run()
        _clean(at)
        assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize(
    ("name", "data", "shown"),
    [
        ("cut.jpg", _jpeg()[:200], "truncated or corrupt"),
        ("deep.tif", _tiff((RAMP * 4e6).astype(np.int32)), "8- or 16-bit"),
    ],
)
def test_bad_upload_in_the_app_gives_its_message_and_keeps_the_image(
    app_env: Path, name: str, data: bytes, shown: str
) -> None:
    at = _app().run()
    before = at.session_state[state.IMAGE]
    _upload(at, name, data)
    _clean(at)
    assert any(name in e.value and shown in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state[state.IMAGE] is before


def test_animated_gif_upload_says_its_first_frame_is_used(app_env: Path) -> None:
    at = _app().run()
    _upload(at, "anim.gif", _gif(3))
    _clean(at)
    assert any("first one is used" in i.value for i in at.info)


def test_a_failing_sidebar_or_page_shows_a_message_and_the_session_lives_on(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app().run()
    image = at.session_state[state.IMAGE]

    def broken(_image: np.ndarray) -> np.ndarray:
        raise ValueError("height and width must be > 0")

    monkeypatch.setattr(sidebar, "drawable", broken)
    at.run()
    _clean(at)
    assert any("sidebar failed" in e.value and "height and width" in e.value for e in at.error)
    assert any("Prediction" in s.value for s in at.subheader)  # the page itself still ran
    monkeypatch.undo()
    at.switch_page(nav.ABOUT).run()
    _clean(at)
    assert not at.error and at.session_state[state.IMAGE] is image  # nothing lost, nothing stuck


def test_profile_file_with_wrong_typed_fields_gives_its_message(app_env: Path, tmp_path: Path) -> None:
    cov = LowRankCovariance.fit(torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)), k=2)
    ThreatProfile(cov, "m", "h", "cifar10", "train", (1, 2), {}, "successful", 6, 6, 0).save(tmp_path / "p.pt")
    blob = torch.load(tmp_path / "p.pt", weights_only=True)
    blob["metadata"]["indices"] = "1,2"
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    at = _app()
    at.session_state[state.PROFILE_DEFAULT_TRIED] = True
    at.run()
    at.switch_page(nav.PROFILE).run()
    at.radio(key="profile_source").set_value("Load a profile file").run()
    at.file_uploader[0].upload("typed.pt", buffer.getvalue())
    at.run()
    _clean(at)
    assert any("typed.pt" in e.value and "indices" in e.value for e in at.error), [e.value for e in at.error]
    assert at.session_state[state.PROFILE] is None


def test_two_sessions_certifying_in_turn_never_see_each_others_results(app_env: Path) -> None:
    from tests.test_app_pages import _certify

    first, second = _app(), _app()
    for at in (first, second):
        at.session_state[state.PROFILE_DEFAULT_TRIED] = True
        at.run()
    _upload(second, "red.png", _encoded(Image.new("RGB", (40, 40), (220, 20, 20)), "PNG"))
    records = {}
    for at, sigma in ((first, 0.25), (second, 0.5)):
        at.switch_page(nav.CERTIFY).run()
        at.multiselect(key="cert_methods").set_value(["RandSmooth"])
        at.number_input(key="cert_sigma").set_value(sigma)
        _certify(at, n0=5, n=20)
        records[sigma] = at.session_state[state.CERTIFY]
    first.run()  # the first session again, after the second one certified
    _clean(first)
    mine, theirs = first.session_state[state.CERTIFY], second.session_state[state.CERTIFY]
    assert mine is records[0.25] and theirs is records[0.5]
    assert mine.image_id == first.session_state[state.IMAGE].image_id != theirs.image_id
    assert theirs.image_id == second.session_state[state.IMAGE].image_id and theirs.image_id.startswith("upload:")
    assert mine.settings != theirs.settings
