"""Shared fixtures. The app tests' fixtures are prefixed ``app_`` (data folder for the Streamlit app)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The commands' and the app's tests run the torch forward (dsmooth_core.backends.default_backend):
# exporting each test model to ONNX would cost seconds per model, and write into the user's cache.
# tests/test_backends.py covers the onnxruntime backend.
os.environ.setdefault("DSMOOTH_BACKEND", "torch")
APP_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _real_data_dir() -> Path | None:
    for candidate in (os.environ.get("DSMOOTH_DATA_DIR"), PROJECT_ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "cifar10" / "test.npz").is_file():
            return Path(candidate)
    return None


def _write_fake_cifar10(root: Path, per_class: int = 10, seed: int = 0) -> None:
    """A tiny stand-in with CIFAR-10's keys (images uint8 N,32,32,3; labels int64; classes)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(10, dtype=np.int64), per_class)
        images = rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
        np.savez(folder / f"{split}.npz", images=images, labels=labels, classes=np.array(APP_CLASSES))


@pytest.fixture(scope="session")
def app_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CIFAR-10 npz folder when present, else a tiny fake one (so the app tests run anywhere)."""
    real = _real_data_dir()
    if real is not None:
        return real
    fake = tmp_path_factory.mktemp("app_fake_data")
    _write_fake_cifar10(fake)
    return fake


@pytest.fixture
def app_env(app_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point DSMOOTH_DATA_DIR at ``app_data_dir`` and make AppTest run app.py on every run.

    AppTest forgets before each run that the app uses st.navigation, and a ``pages/`` folder beside
    app.py then puts Streamlit in its legacy multipage mode, which runs the page file alone (no
    app.py, no sidebar). A live server leaves that mode for good the first time st.navigation runs,
    so the tests pin the same state the live app is in.
    """
    from streamlit.runtime.pages_manager import PagesManager

    original_init = PagesManager.__init__

    def init_with_navigation(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_with_navigation)
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(app_data_dir))
    return app_data_dir
