"""The certify command: Cohen's TSV columns, one line per image, resumable."""

from __future__ import annotations

import csv

import pytest
import torch

from dsmooth_core import LowRankCovariance
from dsmooth_core.cli import main
from dsmooth_core.cli.certify_cmd import resumable_tsv
from tests.fakedata import write_fake_cifar10


def _rows(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = write_fake_cifar10(tmp_path / "data", per_class=2)
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(root))
    return root


ARGS = [
    "certify",
    "--model",
    "cifar10_resnet20",
    "--untrained",
    "--n0",
    "5",
    "--n",
    "20",
    "--batch",
    "10",
    "--skip",
    "5",
    "--device",
    "cpu",
]


def _run(argv):
    torch.manual_seed(0)  # untrained weights come from the global RNG: the same model every call
    return main(argv)


def test_writes_cohen_columns_and_resumes(data_dir, tmp_path):
    out = tmp_path / "cert.tsv"
    assert _run([*ARGS, "--out", str(out), "--max", "2"]) == 0
    first = _rows(out)
    assert list(first[0]) == ["idx", "label", "predict", "radius", "correct", "time", "method", "metric", "p_lower"]
    assert [r["idx"] for r in first] == ["0", "5"] and {r["metric"] for r in first} == {"l2"}
    assert _run([*ARGS, "--out", str(out)]) == 0  # resumes: only the missing images are added
    rows = _rows(out)
    assert [r["idx"] for r in rows] == ["0", "5", "10", "15"]
    assert rows[:2] == first
    fresh = tmp_path / "fresh.tsv"
    _run([*ARGS, "--out", str(fresh)])
    assert [(r["idx"], r["predict"], r["radius"]) for r in _rows(fresh)] == [
        (r["idx"], r["predict"], r["radius"]) for r in rows
    ]


def test_dsmooth_needs_and_uses_a_profile(data_dir, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main([*ARGS, "--method", "dsmooth", "--out", str(tmp_path / "x.tsv")])
    assert exit_info.value.code == 2
    cov = LowRankCovariance.fit(torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(0)), k=3)
    cov.save(tmp_path / "cov.pt")
    out = tmp_path / "d.tsv"
    main([*ARGS, "--method", "dsmooth", "--profile", str(tmp_path / "cov.pt"), "--max", "1", "--out", str(out)])
    assert _rows(out)[0]["metric"] == "mahalanobis" and _rows(out)[0]["method"] == "DSmooth"


def test_a_resumable_tsv_writes_its_header_with_the_first_row_and_leaves_nothing_on_failure(tmp_path):
    path, columns = tmp_path / "rows.tsv", ("idx", "method", "value")
    with pytest.raises(RuntimeError), resumable_tsv(path, columns, ("idx", "method"), "test") as (done, write):
        assert done == set()
        raise RuntimeError("refused before the first row")
    assert not path.exists()  # no header-only file behind a refusal
    with resumable_tsv(path, columns, ("idx", "method"), "test") as (done, write):
        write((3, "RandSmooth", 0.5))
    with pytest.raises(RuntimeError), resumable_tsv(path, columns, ("idx", "method"), "test") as (done, write):
        assert done == {("3", "RandSmooth")}
        raise RuntimeError("a later failure keeps the rows already written")
    assert path.read_text() == "idx\tmethod\tvalue\n3\tRandSmooth\t0.5\n"
