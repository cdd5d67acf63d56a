"""benchmarks/leaderboard.py on the tiny fixture: rows per (model, seed), skipped when done, the summary with its
spread, a model that cannot run on the dataset named with its reason, tuned rows beside the defaults, bad --tune
options stopped before any row trains."""
import os
import sys

import pytest
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
    assert "| SASRec | 2 |" in summary and "±" in summary and "| MQL4GRec |" not in summary
    # the model that cannot run here is named below the table with its reason, paths cut to file names
    assert "MQL4GRec: no row on tiny-beauty. MQL4GRec reads each item's text and image codes" in summary
    assert "tiny-beauty.text-codes.json" in summary and str(FIXTURES) not in summary
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
    assert "MQL4GRec: no row on tiny-beauty." in readme.read_text()


def _sasrec_profile(tmp_path, workdir):
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({
        "epochs": 1, "eval_step": 1, "stopping_step": 1, "MAX_ITEM_LIST_LENGTH": 10, "show_progress": False,
        "state": "WARNING", "gpu_id": "", "cache_dir": str(workdir / "cache"),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "per_model": {"SASRec": {"hidden_size": 16, "inner_size": 32, "learning_rate": 0.001}}}))
    return profile


def test_tuned_rows_train_the_searchs_best_configuration_beside_the_defaults(tmp_path, workdir, monkeypatch):
    """--tune: the search (recbole_genrec.tuning.run_tuning, whose real Ray runs test_tuning.py covers; here a
    stand-in that checks the call and writes a trial table) runs on the row's settings without its checkpoint folder
    or resume file; its table and best configuration are kept; the best configuration's own rows sit beside the
    default rows; a finished search and finished rows are not run again."""
    import inspect

    import recbole_genrec.quick_start as quick_start
    import recbole_genrec.tuning as tuning

    hyper = tmp_path / "SASRec.hyper"
    hyper.write_text("learning_rate loguniform -9.21,-4.61\n")
    out = tmp_path / "out"
    argv = ["--dataset=tiny-beauty", f"--data_path={FIXTURES}", f"--profile={_sasrec_profile(tmp_path, workdir)}",
            "--seeds=2020", f"--out={out}", f"--work_dir={tmp_path / 'work'}", "--threads=1",
            f"--tune=SASRec={hyper}", "--trials=2"]
    searches = []
    real_search = inspect.signature(tuning.run_tuning)

    def search(*args, **kwargs):
        bound = real_search.bind(*args, **kwargs)  # a call the real search accepts
        searches.append(bound.arguments)
        os.makedirs(kwargs["tune_dir"])
        table = os.path.join(kwargs["tune_dir"], "results.csv")
        with open(table, "w") as handle:
            handle.write("trial,learning_rate,valid_ndcg@10,status\na,0.0002,0.01,TERMINATED\nb,0.004,0.03,TERMINATED\n")
        best = {"trial": "b", "learning_rate": 0.004}
        return tuning.TuningResult(model=args[0], dataset=args[1], valid_metric="ndcg@10", rows=[{}, best],
                                   best=best, best_config={"model": args[0], "dataset": args[1],
                                                           "learning_rate": 0.004},
                                   best_checkpoint=None, results_csv=table)

    trained = []
    run = quick_start.run_recbole_genrec

    def recording_run(model, dataset, config_dict=None, **kwargs):
        trained.append(config_dict["learning_rate"])
        return run(model, dataset, config_dict=config_dict, **kwargs)

    monkeypatch.setattr(tuning, "run_tuning", search)
    monkeypatch.setattr(quick_start, "run_recbole_genrec", recording_run)
    assert leaderboard.main(argv) == 0

    [call] = searches
    assert call["model"] == "SASRec" and call["hyper_file"] == str(hyper) and call["trials"] == 2
    assert call["search"] == "random" and call["max_concurrent"] == 1
    assert call["config_dict"]["learning_rate"] == 0.001 and call["config_dict"]["hidden_size"] == 16
    assert not {"checkpoint_dir", "resume_file"} & set(call["config_dict"])
    assert "b,0.004" in (out / "tuning-tiny-beauty-SASRec.csv").read_text()
    best = yaml.safe_load((out / "tuning-tiny-beauty-SASRec.yaml").read_text())
    assert best == {"model": "SASRec", "dataset": "tiny-beauty", "learning_rate": 0.004}

    from recbole_genrec.results import read_csv

    rows = read_csv(out / "leaderboard-tiny-beauty.csv")
    assert [(row["model"], row["seed"]) for row in rows] == [("SASRec", 2020), ("SASRec (tuned)", 2020)]
    assert rows[1]["tuned"] == {"learning_rate": 0.004}  # read_csv parses the JSON column
    assert trained == [0.001, 0.004]  # the default row, then the tuned row, each with its setting
    summary = (out / "leaderboard-tiny-beauty.md").read_text()
    assert "| SASRec | 1 |" in summary and "| SASRec (tuned) | 1 |" in summary

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished search or row ran again")

    monkeypatch.setattr(tuning, "run_tuning", must_not_run)
    monkeypatch.setattr(quick_start, "run_recbole_genrec", must_not_run)
    assert leaderboard.main(argv) == 0


@pytest.mark.parametrize("tune, message", [
    ("GRU4Rec={hyper}", "--tune names GRU4Rec, not among the table's models"),
    ("SASRec={bad}", "SASRec's search over"),
])
def test_bad_tune_options_stop_before_any_row_trains(tmp_path, workdir, monkeypatch, capsys, tune, message):
    import recbole_genrec.quick_start as quick_start

    hyper, bad = tmp_path / "ok.hyper", tmp_path / "bad.hyper"
    hyper.write_text("learning_rate choice [0.01, 0.0001]\n")
    bad.write_text("hidden_size choice [16, 'wide']\n")

    def must_not_train(*args, **kwargs):
        raise AssertionError("a row trained before the options were checked")

    monkeypatch.setattr(quick_start, "run_recbole_genrec", must_not_train)
    argv = ["--dataset=tiny-beauty", f"--data_path={FIXTURES}", f"--profile={_sasrec_profile(tmp_path, workdir)}",
            "--seeds=2020", f"--out={tmp_path / 'out'}", f"--work_dir={tmp_path / 'work'}",
            "--tune=" + tune.format(hyper=hyper, bad=bad)]
    with pytest.raises(SystemExit) as stop:
        leaderboard.main(argv)
    assert message in str(stop.value)
    assert not (tmp_path / "out").exists()


def test_missing_hyper_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        leaderboard.parse(["--dataset=ml-100k", f"--tune=TIGER={tmp_path / 'none.hyper'}"])
    assert "TIGER's hyper file" in capsys.readouterr().err
