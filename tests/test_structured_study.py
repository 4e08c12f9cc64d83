"""The structured-threat study's page (docs/REPRODUCTION.md) against its committed outputs.

The records are re-analysed here, so a table on the page, ``results.json`` and the records cannot
drift apart: a changed cell, a changed record or a changed analysis fails.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "docs" / "reproduction" / "structured"
RECORDS = sorted((ROOT / "docs" / "reproduction" / "records").glob("structured_*.jsonl.gz"))


@pytest.fixture(scope="module")
def summarize():
    spec = importlib.util.spec_from_file_location("structured_summarize", HERE / "summarize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def profiles() -> dict:
    return json.loads((HERE / "profiles.json").read_text())


def test_results_follow_from_the_committed_records(summarize, profiles):
    assert RECORDS, "the study's records are committed"
    derived = json.loads(json.dumps(summarize.results(RECORDS, profiles)))  # as JSON stores it
    assert derived == json.loads((HERE / "results.json").read_text())


def test_the_page_shows_the_committed_tables(summarize, profiles):
    page = (ROOT / "docs" / "REPRODUCTION.md").read_text()
    results = json.loads((HERE / "results.json").read_text())
    energy = json.loads((HERE / "energy.json").read_text())
    tables = (
        summarize.profile_markdown(profiles),
        summarize.energy_markdown(energy, profiles),
        summarize.markdown(results, profiles),
    )
    for table in tables:
        for block in table.split("\n\n"):
            assert block in page, f"the page's table differs from the committed output:\n{block[:300]}"


def test_every_record_names_a_described_profile_and_a_structured_threat(profiles):
    from dsmooth_core.experiments.records import load_records

    records = load_records(RECORDS)
    assert {r["profile_hash"] for r in records} <= set(profiles)
    assert {r["attack"] for r in records} <= {"patch", "lowfreq", "nonuniform", "reachable"}
    assert all("base_fooled" in r for r in records)
