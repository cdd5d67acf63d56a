"""benchmarks/leaderboard.py on the tiny fixture: rows per (model, seed), skipped when done, the summary with its
spread, a model that cannot run on the dataset named with its reason."""
import os
import sys

import yaml

from conftest import FIXTURES, ROOT, TINY_TIGER

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import leaderboard  # noqa: E402

TIGER_SIZES = {key: value for key, value in TINY_TIGER.items() if key != "tokenizer_params"}


def test_leaderboard_fills_skips_and_summarises(tmp_path, workdir, monkeypatch):
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({
        "epochs": 1, "eval_step": 1, "stopping_step": 1, "MAX_ITEM_LIST_LENGTH": 10, "show_progress": False,
        "state": "WARNING", "gpu_id": "", "cache_dir": str(workdir / "cache"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "text_fields": ["title", "brand", "categories", "price"],
        "per_model": {"SASRec": {"hidden_size": 16, "inner_size": 32},
                      "TIGER": {**TIGER_SIZES, "tokenizer_params": TINY_TIGER["tokenizer_params"]},
                      "MQL4GRec": {"d_model": 32}}}))
    out, readme = tmp_path / "out", tmp_path / "README.md"
    readme.write_text("# x\n<!-- leaderboard:tiny-beauty -->\nold\n<!-- /leaderboard -->\nafter\n")
    monkeypatch.setattr(leaderboard, "ROOT", str(tmp_path))  # the README the command rewrites
    argv = ["--dataset=tiny-beauty", f"--data_path={FIXTURES}", f"--profile={profile}", "--seeds=2020,2021",
            f"--out={out}", f"--work_dir={tmp_path / 'work'}", "--readme", "--threads=1"]
    assert leaderboard.main(argv) == 0

    from recbole_genrec.results import read_csv

    rows = read_csv(out / "leaderboard-tiny-beauty.csv")
    assert [(row["model"], row["seed"]) for row in rows] == [("SASRec", 2020), ("SASRec", 2021),
                                                             ("TIGER", 2020), ("TIGER", 2021)]
    for row in rows:
        assert 0 <= row["test_ndcg@10"] <= row["test_recall@10"] <= 1 and 0 <= row["valid_ndcg@10"] <= 1
        assert row["epochs"] <= row["epoch_cap"] == 1 and 0 <= row["best_epoch"] < row["epochs"]
        assert row["train_seconds"] > 0 and row["test_users_per_s"] > 0 and row["parameters"] > 0
        assert row["commit"]
    summary = (out / "leaderboard-tiny-beauty.md").read_text()
    assert "| SASRec | 2 |" in summary and "±" in summary and "MQL4GRec" not in summary
    assert (out / "leaderboard-tiny-beauty.png").stat().st_size > 0
    text = readme.read_text()
    assert "old" not in text and "| TIGER | 2 |" in text and text.endswith("<!-- /leaderboard -->\nafter\n")

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished row was trained again")

    import recbole_genrec.quick_start as quick_start

    monkeypatch.setattr(quick_start, "run_recbole_genrec", must_not_train)
    assert leaderboard.main(argv) == 0
    assert len(read_csv(out / "leaderboard-tiny-beauty.csv")) == 4

    # --summarize: the tables again from the CSV alone, for the rows of every model, nothing trained
    (out / "leaderboard-tiny-beauty.md").unlink()
    readme.write_text("# x\n<!-- leaderboard:tiny-beauty -->\nold\n<!-- /leaderboard -->\n")
    assert leaderboard.main(argv + ["--summarize"]) == 0
    assert "| TIGER | 2 |" in (out / "leaderboard-tiny-beauty.md").read_text() and "old" not in readme.read_text()
