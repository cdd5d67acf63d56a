"""benchmarks/scaling.py: the --quick run (1,000 items, every stage and method, one worker process per stage), its
resumability, a worker that dies, the methods that cannot run at a size, and the synthetic catalogue. Timings are
reported by the run, never asserted."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import scaling  # noqa: E402


def read(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_quick_run_has_a_row_per_stage_and_method_plots_and_slopes(tmp_path):
    out = tmp_path / "scaling.csv"
    assert scaling.main(["--quick", f"--out={out}", "--threads=1"]) == 0
    rows = read(out)
    assert list(rows[0]) == scaling.COLUMNS
    assert not [row for row in rows if row["note"].startswith("error:")]
    measured = {(row["stage"], row["method"], row["history"]) for row in rows}
    quantity = {"tokenizer": "seconds", "tables": "bytes", "decode": "users_per_s", "train": "seq_per_s"}
    for stage, methods in scaling.METHODS.items():
        for method, (_, names) in methods.items():
            for name in names:
                histories = [str(h) for h in scaling.HISTORIES] if stage == "train" else \
                    ["10" if stage == "decode" else ""]
                for history in histories:
                    assert (stage, name, history) in measured, (stage, name, history)
    for row in rows:
        assert row["items"] == "1000" and row["threads"] == "1" and row["commit"] and "--quick" in row["command"]
        assert float(row["seconds"]) > 0 and float(row[quantity[row["stage"]]]) > 0
        assert float(row["peak_rss_mb"]) > 50 and "CPU" in row["hardware"]
    assert len(rows) == sum(len(names) * (len(scaling.HISTORIES) if stage == "train" else 1)
                            for stage, methods in scaling.METHODS.items() for _, names in methods.values())
    for stage in scaling.STAGES:
        assert (tmp_path / f"scaling-{stage}.png").stat().st_size > 5000
    slopes = {(row["stage"], row["method"], row["against"], row["group"]): row for row in read(
        tmp_path / "scaling-slopes.csv")}
    for method in ("TIGER", "RPG"):  # three histories at one size: a slope; one size: none
        assert float(slopes[("train", method, "history", "items=1000")]["slope"]) < 0
    assert slopes[("decode", "TIGER", "items", "")]["slope"] == ""
    # resumable: every row is there, so a second run measures nothing and writes no row
    before = out.read_text()
    assert scaling.main(["--quick", f"--out={out}", "--threads=1"]) == 0
    assert out.read_text() == before


def test_a_worker_that_dies_leaves_an_error_row_and_the_stage_goes_on(tmp_path, monkeypatch):
    """The worker is replaced: its first launch writes one row and dies as the OOM killer would kill it; the
    fresh worker gets the jobs after the one it died on. The error row is measured again by the next run."""
    import json

    out = tmp_path / "scaling.csv"
    real_run, launches = subprocess.run, []

    def fake_run(command, *args, **kwargs):
        if "--_worker" not in command:
            return real_run(command, *args, **kwargs)
        spec = json.loads(command[-1])
        launches.append([job[0] for job in spec["jobs"]])
        jobs = spec["jobs"][:1] if len(launches) == 1 else spec["jobs"]
        for method, _, history in jobs:
            scaling.append_row(spec["out"], {"stage": spec["stage"], "method": method, "items": spec["items"],
                                             "history": history, "seconds": 1.0, "users_per_s": 5.0,
                                             "threads": spec["threads"]})
        return subprocess.CompletedProcess(command, -9 if len(launches) == 1 else 0)

    monkeypatch.setattr(scaling.subprocess, "run", fake_run)
    argv = ["--sizes=1e3", "--stages=decode", "--methods=TIGER,LETTER,ColaRec", f"--out={out}", "--threads=1"]
    assert scaling.main(argv) == 0
    assert launches == [["TIGER", "LETTER", "ColaRec"], ["ColaRec"]]
    rows = {row["method"]: row for row in read(out)}
    assert rows["TIGER"]["seconds"] and rows["ColaRec"]["seconds"]
    assert rows["LETTER"]["note"].startswith("error: the worker died (killed") and not rows["LETTER"]["seconds"]
    args = type("Args", (), {"out": str(out), "sizes": [1000], "stages": ["decode"], "threads": 1,
                             "methods": ["TIGER", "LETTER", "ColaRec"], "exclude": []})
    assert scaling.plan(args, scaling.quick_profile()) == [(1000, "decode", "LETTER", None)]


def test_method_filters_name_methods_models_and_stages():
    assert scaling.selected_methods("decode", ["rpg"]) == ["RPG-exact", "RPG-graph"]
    assert scaling.selected_methods("tokenizer", ["TIGER"]) == ["RQ-KMeans", "RQ-VAE"]
    assert "RPG-graph" not in scaling.selected_methods("tables", [], ["tables:RPG-graph"])
    assert "RPG-graph" in scaling.selected_methods("decode", [], ["tables:RPG-graph"])
    assert scaling.selected_methods("train", ["SASRec"]) == []


def test_eager_is_not_measurable_above_its_node_vocabulary(tmp_path):
    context = scaling.Context({"items": 300_000, "seed": 2020, "cache_dir": str(tmp_path), "zipf": 1.0})
    with pytest.raises(scaling.NotMeasurable, match="MAX_NODE_VOCABULARY"):
        context.semantic_ids("hk-eager")  # refused before any vector is drawn or tree fitted


def test_synthetic_catalogue_is_deterministic_clustered_and_zipf():
    text = scaling.text_vectors(2000, seed=7)
    assert text.shape == (2001, scaling.TEXT_DIM) and text.dtype == np.float32
    assert np.array_equal(text, scaling.text_vectors(2000, seed=7))
    assert not text[0].any() and np.allclose(np.linalg.norm(text[1:], axis=1), 1.0, atol=1e-5)
    _, sub_of_item = scaling.catalogue_structure(2000, seed=7)
    same = text[1:][sub_of_item == sub_of_item[0]]
    assert (same @ text[1]).mean() > 0.5 > abs((text[1:] @ text[1]).mean())  # clustered, not uniform
    history = scaling.histories(2000, seed=7, exponent=1.0, count=500, length=20)
    assert history.shape == (500, 20) and history.min() >= 1 and history.max() <= 2000
    counts = np.bincount(history.ravel(), minlength=2001)[1:]
    assert np.sort(counts)[-20:].sum() > 0.2 * counts.sum()  # the head of a power law
    assert np.array_equal(history, scaling.histories(2000, seed=7, exponent=1.0, count=500, length=20))
