"""dsmooth_core.data: CIFAR-10 loaders, offline download failure, image folders, uploads, subsets."""

from __future__ import annotations

import csv
import io
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from dsmooth_core.data import (
    DataUnavailableError,
    ImageSet,
    UploadError,
    balanced_subset,
    data_dir,
    load_cifar10,
    load_image_folder,
    load_imagenet_sample,
    load_upload,
    to_model_input,
)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SHARED_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet_sample"


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _write_npz(root: Path, split: str, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _images(n, seed=n), np.arange(n, dtype=np.int64) % 10
    (root / "cifar10").mkdir(parents=True, exist_ok=True)
    np.savez(root / "cifar10" / f"{split}.npz", images=images, labels=labels, classes=np.array(CLASSES))
    return images, labels


def _write_batches(folder: Path, per_batch: int = 2) -> dict[str, np.ndarray]:
    """The pickled layout torchvision's CIFAR10 reads: rows of 3072 bytes, channel-major."""
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        images = _images(per_batch, seed=i)
        rows = images.transpose(0, 3, 1, 2).reshape(per_batch, 3072)
        entry = {"batch_label": name, "data": rows, "labels": [i % 10] * per_batch}
        (folder / name).write_bytes(pickle.dumps(entry))
        written[name] = images
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CLASSES)}))
    return written


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


# --- locations and CIFAR-10 ----------------------------------------------------------------------


def test_data_dir_honours_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(tmp_path / "elsewhere"))
    assert data_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("DSMOOTH_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert data_dir() == tmp_path / "data"


def test_npz_loader_via_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = _write_npz(tmp_path, "test")
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(tmp_path))
    data = load_cifar10("test", download=False)
    assert data.classes == CLASSES and len(data) == 4
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    batch = data.tensor([2, 0])
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.float32
    assert torch.equal(batch[0], torch.from_numpy(images[2]).permute(2, 0, 1).float() / 255)


def test_torchvision_layout_loader(tmp_path: Path) -> None:
    written = _write_batches(tmp_path / "cifar-10-batches-py")
    train = load_cifar10("train", root=tmp_path, download=False)
    test = load_cifar10("test", root=tmp_path, download=False)
    assert len(train) == 10 and len(test) == 2 and test.classes == CLASSES
    np.testing.assert_array_equal(test.images, written["test_batch"])
    np.testing.assert_array_equal(train.images[2:4], written["data_batch_2"])
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_tampered_batch_file_does_not_run_code(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_batches(folder)
    marker = tmp_path / "code-ran"

    class Planted:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Planted(), "labels": []}))
    with pytest.raises(DataUnavailableError, match="refusing to load"):
        load_cifar10("test", root=tmp_path, download=False)
    assert not marker.exists()


def test_missing_data_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="DSMOOTH_DATA_DIR"):
        load_cifar10("test", root=tmp_path, download=False)


@pytest.mark.parametrize("root_exists", [True, False])
def test_failed_download_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_exists: bool) -> None:
    def offline(url: str, download_root: str, *args: object, **kwargs: object) -> None:
        (Path(download_root) / "cifar-10-python.tar.gz").write_bytes(b"partial")
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    root = tmp_path / "data"
    if root_exists:
        root.mkdir()
    with pytest.raises(DataUnavailableError) as caught:
        load_cifar10("test", root=root)
    message = str(caught.value)
    assert "no network" in message and str(root / "cifar10" / "test.npz") in message and "DSMOOTH_DATA_DIR" in message
    assert list(tmp_path.rglob("*")) == ([root] if root_exists else [])


def test_download_moves_files_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(url: str, download_root: str, *args: object, **kwargs: object) -> None:
        _write_batches(Path(download_root) / "cifar-10-batches-py")

    def exists(fpath: str, md5: str | None = None) -> bool:  # the tiny files cannot match the real md5
        return Path(fpath).is_file()

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", fake_download)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists)
    data = load_cifar10("test", root=tmp_path)
    assert len(data) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]


def test_imageset_validates_its_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(np.zeros((1, 2, 2, 3), np.float32), np.zeros(1, np.int64), ("a",))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\)"):
        ImageSet(np.zeros((1, 2, 2, 3), np.uint8), np.ones(1, np.int64), ("a",))


# --- image folders -------------------------------------------------------------------------------


def test_image_folder_layout(tmp_path: Path) -> None:
    for cls in ("dog", "cat"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / cls / "a.png")
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    items = load_image_folder(tmp_path)
    assert [(p.name, label, name) for p, label, name in items] == [("a.png", 0, "cat"), ("a.png", 1, "dog")]


def test_labels_csv_layout(tmp_path: Path) -> None:
    sample = tmp_path / "imagenet_sample"
    sample.mkdir()
    Image.new("RGB", (4, 4)).save(sample / "n01440764_tench.JPEG", "JPEG")
    with (sample / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class_index", "wnid", "name_in_filename", "torchvision_category", "filename"])
        writer.writerow([0, "n01440764", "tench", "tench", "n01440764_tench.JPEG"])
    [item] = load_imagenet_sample(tmp_path)
    assert item.path == sample / "n01440764_tench.JPEG" and item.label == 0 and item.class_name == "tench"
    with (sample / "labels.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow([10, "n01530575", "brambling", "brambling", "gone.JPEG"])
    with pytest.raises(DataUnavailableError, match=r"gone\.JPEG"):
        load_image_folder(sample)


def test_folder_without_layout_is_explained(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "loose.png")
    with pytest.raises(DataUnavailableError, match=r"class subfolders nor a labels\.csv"):
        load_image_folder(tmp_path)


@pytest.mark.skipif(not SHARED_SAMPLE.is_dir(), reason="shared ImageNet sample not present")
def test_shared_imagenet_sample_lists_100_classes() -> None:
    items = load_imagenet_sample(SHARED_SAMPLE.parent)
    assert [item.label for item in items] == list(range(0, 1000, 10))


# --- uploads -------------------------------------------------------------------------------------


def test_rgba_upload_is_composited_on_white() -> None:
    img = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    img.putpixel((1, 0), (0, 0, 255, 0))  # fully transparent
    out = load_upload(_encode(img, "PNG"))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)


def test_greyscale_palette_and_cmyk_uploads_become_rgb() -> None:
    grey = load_upload(_encode(Image.new("L", (3, 3), 77), "PNG"))
    assert grey.mode == "RGB" and grey.getpixel((1, 1)) == (77, 77, 77)
    palette = Image.new("RGB", (3, 3), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert load_upload(_encode(palette, "GIF")).getpixel((0, 0)) == (10, 200, 30)
    cmyk = load_upload(_encode(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG"))
    assert cmyk.mode == "RGB" and min(cmyk.getpixel((4, 4))) > 240


def test_sixteen_bit_greyscale_is_rescaled() -> None:
    deep = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert load_upload(_encode(deep, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    out = load_upload(_encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_truncated_and_foreign_files_are_refused() -> None:
    png = _encode(Image.fromarray(_images(1, 0)[0]), "PNG")
    with pytest.raises(UploadError, match="truncated or corrupt"):
        load_upload(png[: len(png) // 2])
    with pytest.raises(UploadError, match="not an image"):
        load_upload(b"%PDF-1.4 definitely not a picture")
    with pytest.raises(UploadError, match="empty"):
        load_upload(b"")


def test_oversized_uploads_are_refused() -> None:
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(UploadError, match=r"the limit is 0\.0 MB"):
        load_upload(data, max_bytes=10)
    with pytest.raises(UploadError, match=r"100x100 pixels; the limit is 0\.005 megapixels"):
        load_upload(data, max_pixels=5_000)


# --- model input ---------------------------------------------------------------------------------


def test_to_model_input_resizes_small_inputs_whole() -> None:
    img = Image.new("RGB", (64, 48), (255, 255, 0))
    out = to_model_input(img, (3, 32, 32))
    assert out.shape == (3, 32, 32) and torch.allclose(out[2], torch.zeros(32, 32))
    grey = to_model_input(torch.full((48, 64), 128, dtype=torch.uint8), (3, 32, 32))
    assert grey.shape == (3, 32, 32) and torch.allclose(grey, torch.full_like(grey, 128 / 255))


def test_to_model_input_crops_large_inputs() -> None:
    out = to_model_input(Image.new("RGB", (500, 375)), (3, 224, 224))
    assert out.shape == (3, 224, 224)
    with pytest.raises(ValueError, match="smaller than"):
        to_model_input(Image.new("RGB", (500, 375)), (3, 224, 224), resize_size=200)


# --- balanced subsets ----------------------------------------------------------------------------


def test_balanced_subset_is_balanced_interleaved_and_seeded() -> None:
    labels = np.repeat(np.arange(3), 10)
    picked = balanced_subset(labels, 7, seed=0)
    counts = np.bincount(labels[picked], minlength=3)
    assert sorted(counts.tolist()) == [2, 2, 3] and len(set(picked.tolist())) == 7
    assert sorted(labels[picked[:3]].tolist()) == [0, 1, 2]
    np.testing.assert_array_equal(picked, balanced_subset(labels.tolist(), 7, seed=0))
    assert not np.array_equal(picked, balanced_subset(labels, 7, seed=1))


def test_balanced_subset_limits() -> None:
    labels = np.array([0] * 5 + [1] * 5 + [2] * 2)
    assert len(balanced_subset(labels, 8, seed=0)) == 8  # 2 + 2 + 2, remainder to the two larger classes
    with pytest.raises(ValueError, match="at most 8 can be drawn"):
        balanced_subset(labels, 9, seed=0)
    assert balanced_subset(labels, 0, seed=0).size == 0
