"""Results name the forward that made them: records, TSV side files and keys never mix the two engines.

The engines' votes may differ by a few near-ties, so a result of one must never stand in for the
other's. Torch adds nothing to a key (``settings.forward_identity``): every result written before the
backends existed was made by torch, and such files and records still resume and analyse as torch's.
"""

from __future__ import annotations

import json

import pytest

from dsmooth_core.backends import forward_name, inference_model, onnx_graph
from dsmooth_core.cli import main
from dsmooth_core.errors import InputRefused
from dsmooth_core.experiments import RecordStore, evaluation_indices, group_records, read_records, run_experiment
from dsmooth_core.settings import engine_part, forward_identity, result_key
from tests.fakedata import write_fake_cifar10
from tests.test_backends import CERTIFY, PROGRAM
from tests.test_experiments import one_thread, setup  # noqa: F401 (fixtures)
from tests.user_models import export_bytes


@pytest.fixture(autouse=True)
def graph_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(onnx_graph.CACHE_ENV, str(tmp_path / "cache"))


def test_torch_adds_nothing_to_a_key_and_another_engine_changes_it() -> None:
    assert forward_identity("torch") == {}
    assert result_key("x", 1, forward_identity("torch")) == result_key("x", 1, {})
    assert result_key("x", 1, forward_identity("onnxruntime")) != result_key("x", 1, forward_identity("torch"))
    with pytest.raises(InputRefused):
        forward_identity("")
    # keys built from positional parts (the app's certificates and attacks): torch's is the key without a forward
    assert result_key("x", 1, *engine_part("torch")) == result_key("x", 1)
    assert result_key("x", 1, *engine_part("onnxruntime")) != result_key("x", 1)


def test_experiment_records_of_each_engine_are_keyed_apart_and_old_ones_read_as_torch(setup, tmp_path) -> None:  # noqa: F811
    model = setup["model"]
    fast, note = inference_model(model, "onnxruntime")
    assert forward_name(fast) == "onnxruntime", note
    path = tmp_path / "records.jsonl"
    indices = evaluation_indices(setup["test"].labels, 2, seed=0)

    def run(which):
        return run_experiment(
            which, setup["test"], indices, setup["profile"], setup["spec"], RecordStore(path), batch_size=8
        )

    torch_written = run(model).records_written
    # a file written before the field existed: the same records without "forward"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["forward"] for r in lines} == {"torch"}
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "forward"}) + "\n" for r in lines))
    assert run(model).records_written == 0  # torch's keys are the ones it always had: nothing to redo
    assert run(fast).records_written == torch_written  # none of torch's records stands in for onnxruntime's
    records = read_records(path)
    engines = sorted(r.get("forward", "torch") for r in records)  # torch's lost the field above
    assert engines == ["onnxruntime"] * torch_written + ["torch"] * torch_written
    groups = group_records(records)
    assert len(groups) == 2 * len({(r["method"], r["k"]) for r in records})
    assert all(("forward onnxruntime" in g.label) == (g.config["forward"] == "onnxruntime") for g in groups)


def test_a_certify_file_refuses_rows_of_the_other_engine(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=2)))
    program = tmp_path / "net.pt2"
    program.write_bytes(export_bytes())
    out = tmp_path / "rows.tsv"
    side = tmp_path / "rows.tsv.settings.json"

    def certify(backend: str, count: int) -> int:
        argv = [*CERTIFY[:-4], "--max", str(count), "--device", "cpu"]
        return main([*argv, "--model-file", str(program), *PROGRAM, "--backend", backend, "--out", str(out)])

    assert certify("torch", 1) == 0
    assert json.loads(side.read_text())["settings"]["--backend"] == "torch"
    capsys.readouterr()
    with pytest.raises(SystemExit, match="2"):
        certify("onnxruntime", 2)
    assert '--backend: the file has "torch", this run "onnxruntime"' in capsys.readouterr().err
    # a side file written before the backends: its rows were torch's
    stored = json.loads(side.read_text())
    del stored["settings"]["--backend"]
    side.write_text(json.dumps(stored))
    with pytest.raises(SystemExit, match="2"):
        certify("onnxruntime", 2)
    assert '--backend: the file has "torch", this run "onnxruntime"' in capsys.readouterr().err
    assert certify("torch", 2) == 0
    assert len(out.read_text().splitlines()) == 1 + 2
