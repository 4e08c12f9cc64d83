"""The library as a user installs it: a wheel in a fresh virtual environment, used from outside the repository.

Slow (a wheel build, a virtual environment and five fresh interpreters, about half a minute) but not
deselected: it is the only test that sees ``dsmooth_core`` without the checkout on ``sys.path``.
Installing torch into the new environment would take minutes and gigabytes, so the new environment
borrows this one's third-party packages through a ``.pth`` file and installs the wheel alone
(``--no-deps``); the wheel's own metadata is checked for the dependencies instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from PIL import Image

from dsmooth_core import IsotropicGaussian, bundled, certify
from dsmooth_core.extras import MissingExtraError, require
from dsmooth_core.models import DEFAULT_MODEL, load_model, prepare_image
from tests.fakedata import write_fake_cifar10

ROOT = Path(__file__).resolve().parents[1]
# What the build sees: the project files, the app and tests included, so the wheel must leave them out itself.
BUILD_SOURCES = ("pyproject.toml", "README.md", "app.py", "dsmooth_core", "dsmooth_lab_ui", "pages", "tests")
CORE_DEPENDENCIES = {"torch", "torchvision", "numpy", "scipy", "pillow", "onnxruntime", "onnx", "onnxscript"}
EXTRAS = {"app": {"streamlit", "plotly", "kaleido"}, "scale": {"ray"}}
OPTIONAL = set().union(*EXTRAS.values())
MAX_FILE_BYTES = 2_000_000  # the repository's rule, bundled model folder excepted
IMAGE = "cat_chelsea.png"
N0, N, BATCH, SEED = 16, 64, 64, 3

API_SCRIPT = f"""
import json, torch, dsmooth_core
from PIL import Image
from dsmooth_core import IsotropicGaussian, bundled, certify
from dsmooth_core.models import DEFAULT_MODEL, load_model, prepare_image
model = load_model(DEFAULT_MODEL)
with Image.open(bundled.GALLERY / {IMAGE!r}) as img:
    x = prepare_image(img, model.info)
cert = certify(model, x, IsotropicGaussian(0.25), {N0}, {N}, 0.001, {BATCH}, torch.Generator().manual_seed({SEED}))
print(json.dumps({{"package": dsmooth_core.__file__, "weights": str(bundled.WEIGHTS), "source": model.info.source,
                  "counts": list(cert.counts_estimation), "prediction": cert.prediction, "radius": cert.radius}}))
"""
LIGHT_IMPORT = (
    "import sys, dsmooth_core, dsmooth_core.cli, dsmooth_core.experiments, dsmooth_core.scale; "
    f"heavy = sorted(set({sorted(OPTIONAL)!r}) & set(sys.modules)); assert not heavy, heavy"
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    bin: Path
    outside: Path  # a working folder outside the repository
    env: dict[str, str]


def _run(argv: list[str | Path], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


def _this_environments_packages() -> list[str]:
    """This interpreter's site-packages, which must not hold the project (the import has to come from the wheel)."""
    folders = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    for folder in folders:
        assert not (Path(folder) / "dsmooth_core").exists(), f"{folder} holds dsmooth_core, which would hide the wheel"
    return folders


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel built from a copy of the sources (a build writes build/ and *.egg-info beside them) and installed."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    for name in BUILD_SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(origin, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", work / "dist", source])
    (wheel,) = (work / "dist").glob("*.whl")

    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "borrowed_test_packages.pth").write_text("\n".join(_this_environments_packages()) + "\n")
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel])

    outside = work / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return Installed(wheel, python, env_dir / "bin", outside, env)


def _in_venv(installed: Installed, argv: list[str | Path]) -> subprocess.CompletedProcess:
    return _run(argv, cwd=installed.outside, env=installed.env)


def _metadata(wheel: Path) -> tuple[list[str], dict[str, str]]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(name).decode())
        return archive.namelist(), metadata


@pytest.mark.slow
def test_the_wheel_holds_the_core_and_its_data_only(installed: Installed) -> None:
    names, _ = _metadata(installed.wheel)
    folders = {n.split("/")[0] for n in names} - {"dsmooth_core"}
    assert len(folders) == 1 and folders.pop().startswith("dsmooth_lab-")  # its .dist-info: no app, pages or tests
    assets = ROOT / "dsmooth_core" / "assets"  # models/ is a link to assets/models: walk through it
    shipped = {
        (Path(folder) / name).relative_to(ROOT).as_posix()
        for folder, _, names_here in os.walk(assets, followlinks=True)
        for name in names_here
    }
    assert shipped >= {"dsmooth_core/assets/models/resnet20_cifar10.pt", "dsmooth_core/assets/gallery/gallery.json"}
    assert shipped <= set(names)
    with zipfile.ZipFile(installed.wheel) as archive:
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "dsmooth = dsmooth_core.cli:main" in entry_points


@pytest.mark.slow
def test_metadata_requires_the_core_and_puts_the_app_and_ray_behind_extras(installed: Installed) -> None:
    _, metadata = _metadata(installed.wheel)
    requirements = [Requirement(line) for line in metadata.get_all("Requires-Dist")]
    unconditional = {r.name.lower() for r in requirements if r.marker is None}
    assert unconditional == CORE_DEPENDENCIES
    assert set(metadata.get_all("Provides-Extra")) == set(EXTRAS)
    for extra, packages in EXTRAS.items():
        wanted = {r.name.lower() for r in requirements if r.marker and r.marker.evaluate({"extra": extra})}
        assert wanted == packages, extra
    # the pinned files make and CI install must satisfy what the wheel declares
    pins = {}
    for file in ("requirements.txt", "requirements-scale.txt"):
        for line in (ROOT / file).read_text().splitlines():
            if line.strip() and not line.startswith(("#", "-")):
                pinned = Requirement(line)
                pins[pinned.name.lower()] = next(iter(pinned.specifier)).version
    for requirement in requirements:
        assert requirement.specifier.contains(pins[requirement.name.lower()]), (requirement, pins)


@pytest.mark.slow
def test_the_installed_api_certifies_with_the_bundled_model_as_the_checkout_does(installed: Installed) -> None:
    result = json.loads(_in_venv(installed, [installed.python, "-c", API_SCRIPT]).stdout)
    assert Path(result["package"]).is_relative_to(installed.python.parents[1])
    assert Path(result["weights"]).is_relative_to(installed.python.parents[1]) and result["source"] == "bundled"
    model = load_model(DEFAULT_MODEL)
    with Image.open(bundled.GALLERY / IMAGE) as img:
        x = prepare_image(img, model.info)
    here = certify(model, x, IsotropicGaussian(0.25), N0, N, 0.001, BATCH, torch.Generator().manual_seed(SEED))
    assert result["counts"] == list(here.counts_estimation)
    assert (result["prediction"], result["radius"]) == (here.prediction, pytest.approx(here.radius))


@pytest.mark.slow
def test_the_console_command_is_python_m_dsmooth_core_and_certifies_from_anywhere(
    installed: Installed, tmp_path: Path
) -> None:
    command = installed.bin / "dsmooth"
    usage = _in_venv(installed, [command, "certify", "--help"]).stdout
    assert usage.startswith("usage: dsmooth certify") and "--data-dir" in usage
    data = write_fake_cifar10(tmp_path / "data", per_class=1)
    args = ["certify", "--data-dir", data, "--max", "1", "--n0", N0, "--n", N, "--batch", BATCH, "--device", "cpu"]
    _in_venv(installed, [command, *args, "--out", tmp_path / "console.tsv"])
    _in_venv(installed, [installed.python, "-m", "dsmooth_core", *args, "--out", tmp_path / "module.tsv"])
    console, module = ((tmp_path / f"{n}.tsv").read_text().splitlines() for n in ("console", "module"))
    assert len(console) == 2 and console[0].startswith("idx\tlabel\tpredict\tradius")
    without_time = [[cell for i, cell in enumerate(line.split("\t")) if i != 5] for line in (*console, *module)]
    assert without_time[:2] == without_time[2:]  # the same program: the same row, bar the seconds it took


@pytest.mark.slow
def test_importing_the_installed_core_loads_no_app_or_cluster_package(installed: Installed) -> None:
    _in_venv(installed, [installed.python, "-c", LIGHT_IMPORT])


def test_a_missing_extra_is_named_in_one_line() -> None:
    message = r'^experiment charts needs no_such_package, which is not installed: pip install "dsmooth-lab\[app\]"$'
    with pytest.raises(MissingExtraError, match=message):
        require("no_such_package.charts", "app", "experiment charts")


def test_no_file_over_2_mb_outside_the_bundled_model_folder() -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode:
        pytest.skip("not a git checkout: the rule is about committed files")
    models = ROOT / "assets" / "models"  # dsmooth_core/assets/models links here, so the package ships them
    files = [ROOT / name for name in listed.stdout.split("\0") if name]
    large = [f for f in files if f.parent != models and f.is_file() and f.stat().st_size > MAX_FILE_BYTES]
    assert not large
