"""The docs cannot drift: generated pages equal what their scripts make, and the README stays a front door."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _script(path: Path) -> ModuleType:
    """Import a script that is not in a package (docs/ and benchmarks/ are plain folders)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_what_the_parser_gives() -> None:
    generated = _script(DOCS / "make_cli_reference.py").reference()
    assert (DOCS / "CLI.md").read_text() == generated, "run: python docs/make_cli_reference.py"


def test_cli_reference_covers_every_sub_command() -> None:
    text = (DOCS / "CLI.md").read_text()
    for command in ("certify", "train", "experiment run", "experiment analyse", "attack", "profile", "audit"):
        assert f"\n## {command}\n" in text


def test_performance_page_is_what_the_result_files_give() -> None:
    generated = _script(DOCS / "make_performance.py").page()
    assert (DOCS / "PERFORMANCE.md").read_text() == generated, "run: python docs/make_performance.py"


def test_every_committed_result_names_its_command_and_machine() -> None:
    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert files, "no benchmark results committed"
    for path in files:
        result = json.loads(path.read_text())
        assert result["benchmark"] in path.name
        assert result["command"].split("python ", 1)[1].startswith(f"benchmarks/{result['benchmark']}.py")
        assert result["machine"]["cores"] >= 1 and result["date"]
        assert result["tables"] and all(rows for rows in result["tables"].values())


def test_a_new_result_file_appears_on_the_page_with_its_file_and_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        results = _script(ROOT / "benchmarks" / "bench_results.py")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    for name in results.RELEVANT_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "benchmarks" / "bench_scale.py"), "--images", "3"])
    path = results.write_result(tmp_path, "bench_scale", {"images": 3}, {"times": [{"engine": "x", "seconds": 4.25}]})
    assert results.write_result("-", "bench_scale", {}, {}) is None
    performance = _script(DOCS / "make_performance.py")
    monkeypatch.setattr(performance, "ROOT", tmp_path)
    text = performance.page(tmp_path)
    assert f"[`{path.name}`]" in text
    assert "Command: `python benchmarks/bench_scale.py --images 3`" in text
    assert "| x | 4.25 |" in text
    assert "## On a GPU" in text and "No run recorded yet" in text


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    top = "\n".join(lines[:40])
    assert "make run" in top and "make test" in top
    image = re.search(r"!\[[^\]]*\]\(([^)]+\.png)\)", top)
    assert image, "a picture of the app in the first 40 lines"
    picture = ROOT / image.group(1)
    assert picture.is_file() and picture.stat().st_size < 300 * 1024


def _real_cifar10() -> Path | None:
    for candidate in (os.environ.get("DSMOOTH_DATA_DIR"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "cifar10" / "test.npz").is_file():
            return Path(candidate)
    return None


@pytest.mark.slow
def test_readme_library_example_prints_what_the_readme_says(tmp_path: Path) -> None:
    """The README's Python example, run from a folder outside the repository, prints its pasted output."""
    data = _real_cifar10()
    if data is None:
        pytest.skip("the example certifies a real CIFAR-10 test image: set DSMOOTH_DATA_DIR")
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```\n\n[^`]*```text\n(.*?)```", readme, re.S)
    assert example, "a python block followed by its output in a text block"
    code, printed = example.groups()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DSMOOTH_DATA_DIR": str(data)}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == printed


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in DOCS.glob("*.md"))])
def test_local_links_point_at_files(page: str) -> None:
    path = ROOT / page
    for target in LINK.findall(path.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{page} links to a missing {target}"
