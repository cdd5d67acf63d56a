"""benchmarks/step_cost.py on the tiny fixture: every model's step timed beside TIGER's, the ratios to TIGER's,
the rows appended to the CSV."""
import csv
import os
import sys

import yaml

from conftest import FIXTURES, ROOT, TINY_TIGER

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import step_cost  # noqa: E402


def test_step_cost_times_each_model_beside_tiger(tmp_path, workdir):
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({
        "MAX_ITEM_LIST_LENGTH": 10, "train_batch_size": 64, "gpu_id": "", "cache_dir": str(workdir / "cache"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "text_fields": ["title", "brand", "categories", "price"],
        "per_model": {"TIGER": {key: value for key, value in TINY_TIGER.items() if key != "train_batch_size"},
                      "SASRec": {"hidden_size": 16, "inner_size": 32}}}))
    out = tmp_path / "steps.csv"
    rows = step_cost.main(["--dataset=tiny-beauty", f"--data_path={FIXTURES}", f"--profile={profile}",
                           "--models=SASRec", "--steps=2", f"--csv={out}"])
    assert [row["model"] for row in rows] == ["TIGER", "SASRec"]
    tiger, sasrec = rows
    assert tiger["step_ratio"] == tiger["epoch_ratio"] == 1.0
    assert tiger["samples_per_step"] == sasrec["samples_per_step"] == 64  # the profile's shared batch
    for row in rows:
        assert row["ms_per_step"] > 0 and row["steps_per_epoch"] > 0 and row["epoch_s"] > 0
    # the ratios are each model's medians over TIGER's, per step and per epoch (steps x step)
    expected = sasrec["ms_per_step"] / tiger["ms_per_step"]
    assert abs(sasrec["step_ratio"] - expected) <= 0.01 + 0.01 * expected
    with open(out) as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["TIGER", "SASRec"]
