"""Ray Tune integration: the hyper file format, and one real search (local Ray, CPU) through the CLI."""
import csv
import glob
import math
import os
import re

import pytest
import yaml

from recbole_genrec import cli
from recbole_genrec.cli import run as cli_main
from recbole_genrec.config import GenRecConfig
from recbole_genrec.hyper import merge_params, parse_hyper_file

from conftest import FIXTURES, ROOT, TINY_TIGER


def _options(overrides):
    """Config overrides as command-line options."""
    return [f"--{key}={value!r}" if not isinstance(value, str) else f"--{key}={value}"
            for key, value in overrides.items()]


def test_hyper_file_format(tmp_path):
    path = tmp_path / "space.hyper"
    path.write_text(
        "# a comment\n"
        "learning_rate loguniform -9.21,-4.61\n"
        "dropout uniform 0.1 0.5\n"
        "n_layers quniform 1,4,1\n"
        "scale quniform 0.5,2.0,0.5\n"
        "hidden_size choice [32, 64]\n"
        "tokenizer_params.codebook_size choice [128,256]\n"
    )
    space = parse_hyper_file(str(path))
    assert list(space) == ["learning_rate", "dropout", "n_layers", "scale", "hidden_size",
                           "tokenizer_params.codebook_size"]
    # loguniform follows RecBole (hyperopt): the bounds are natural-log exponents.
    low, high = space["learning_rate"].extremes()
    assert math.isclose(low, 1e-4, rel_tol=1e-2) and math.isclose(high, 1e-2, rel_tol=1e-2)
    domain = space["learning_rate"].domain()
    assert math.isclose(domain.lower, 1e-4, rel_tol=1e-2) and math.isclose(domain.upper, 1e-2, rel_tol=1e-2)
    assert space["dropout"].values == (0.1, 0.5)
    assert all(isinstance(space["n_layers"].domain().sample(), int) for _ in range(5))
    assert isinstance(space["scale"].domain().sample(), float)
    assert space["hidden_size"].domain().categories == [32, 64]
    assert space["hidden_size"].domain(grid=True) == {"grid_search": [32, 64]}


def test_shipped_search_spaces_cover_every_generative_model(tiny):
    """hyper/<Model>.hyper exists for SASRec and every plugin model, parses, and names only real config keys."""
    from recbole_genrec.registry import GENREC_MODELS

    paths = sorted(glob.glob(os.path.join(ROOT, "hyper", "*.hyper")))
    names = {os.path.basename(path)[: -len(".hyper")] for path in paths}
    assert {"SASRec", *GENREC_MODELS} <= names
    for path in paths:
        model = os.path.basename(path).split(".")[0].split("-")[0]  # TIGER-cpu.hyper -> TIGER
        # MQL4GRec reads published codes: a dataset that ships them
        dataset, data_path = (("amazon-instruments-mm", os.path.join(ROOT, "dataset")) if model == "MQL4GRec"
                              else ("tiny-beauty", FIXTURES))
        config = GenRecConfig(model=model, dataset=dataset, config_dict=tiny(data_path=data_path))
        for name in parse_hyper_file(path):
            top, _, key = name.partition(".")
            assert top in config.final_config_dict, f"{path}: {name}"
            assert not key or key in config[top], f"{path}: {name}"


@pytest.mark.parametrize("line, message", [
    ("lr normal 0,1", "unknown kind"),
    ("lr uniform 1", "needs 2 numbers"),
    ("lr uniform 0.5,0.1", "low < high"),
    ("lr choice 0.1", "non-empty list"),
    ("lr choice [0.1", "Python list literal"),
    ("lr", "expected `name kind values`"),
])
def test_hyper_file_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.hyper"
    path.write_text(f"hidden_size choice [32]\n{line}\n")
    with pytest.raises(ValueError, match=message) as error:
        parse_hyper_file(str(path))
    assert f"{path}:2" in str(error.value)


@pytest.mark.parametrize("line, message", [
    ("learning_rate choice ['abc']", r"learning_rate choice: Wrong type: learning_rate must be a number \(default "
                                     r"0\.001\), got 'abc' \(str\)"),
    ("epochs choice ['1', '2']", r"epochs choice: Wrong type: epochs must be an int .*got '1' \(str\)"),
    ("epochs uniform 1,5", r"epochs uniform: Wrong type: epochs must be an int .*got 1\.0 \(float\)"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_hyper_value_of_the_wrong_type_is_refused_before_ray_starts(tiny, tmp_path, monkeypatch, capsys, line,
                                                                    message, dry_run):
    monkeypatch.setattr("recbole_genrec.tuning.init_ray", lambda *a, **k: pytest.fail("Ray started"))
    hyper = tmp_path / "SASRec.hyper"
    hyper.write_text(f"hidden_size choice [32, 64]\n{line}\n")
    argv = ["--model=SASRec", "--dataset=tiny-beauty", f"--tune={hyper}", f"--dry_run={dry_run}"]
    argv += _options({key: value for key, value in tiny().items() if key != "dataset"})
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(rf"recbole_genrec: error: {re.escape(str(hyper))}:2: {message}", err)


def test_hyper_values_of_the_option_types_pass_the_dry_run(tiny, tmp_path, capsys):
    hyper = tmp_path / "SASRec.hyper"  # an int for a float option, whole-number quniform for an int one, None
    hyper.write_text("learning_rate choice [1, 0.01]\nepochs quniform 1,3,1\nweight_decay choice [None, 0.1]\n")
    argv = ["--model=SASRec", "--dataset=tiny-beauty", f"--tune={hyper}", "--dry_run=True"]
    argv += _options({key: value for key, value in tiny().items() if key != "dataset"})
    assert cli.main(argv) == 0
    assert "ready to tune" in capsys.readouterr().out


def test_dotted_names_merge_into_the_default_dict():
    base = {"tokenizer_params": {"num_levels": 3, "codebook_size": 256, "hidden_dims": [512, 256]}}
    overrides = merge_params({"tokenizer_params.codebook_size": 128, "learning_rate": 0.01}, base)
    assert overrides == {"learning_rate": 0.01,
                         "tokenizer_params": {"num_levels": 3, "codebook_size": 128, "hidden_dims": [512, 256]}}
    assert base["tokenizer_params"]["codebook_size"] == 256  # the defaults are not modified


def test_real_search_selects_on_validation_and_reports_failures(tiny, tmp_path, capsys, caplog):
    """Three TIGER trials on the tiny fixture (local Ray, 2 CPUs, 1 epoch each): two learning rates and a third,
    invalid one. Trials change only an optimiser parameter, so the tokenizer is fitted once."""
    hyper = tmp_path / "TIGER.hyper"
    hyper.write_text("learning_rate choice [0.003, 0.00001, -1.0]\n")
    tune_dir = tmp_path / "search"
    cache_dir = tmp_path / "cache"  # empty: the first trial has to fit the tokenizer
    overrides = tiny(**TINY_TIGER, cache_dir=str(cache_dir))
    del overrides["dataset"], overrides["checkpoint_dir"]  # each trial gets its own checkpoint directory
    argv = ["--model=TIGER", "--dataset=tiny-beauty", f"--tune={hyper}", "--search=grid", "--ray_num_cpus=2",
            "--cpus_per_trial=1", f"--tune_dir={tune_dir}"]
    argv += _options(overrides)
    result = cli_main(argv)
    out, err = capsys.readouterr()

    rows = result.rows
    assert sorted(row["learning_rate"] for row in rows) == [-1.0, 0.00001, 0.003]
    failed = [row for row in rows if row["status"] == "ERROR"]
    finished = [row for row in rows if row["status"] != "ERROR"]
    assert len(failed) == 1 and failed[0]["learning_rate"] == -1.0
    assert "Invalid learning rate" in failed[0]["error"]
    # Tune's record of the failed trial is one line without the traceback (what its console handler prints); the
    # trial's error.txt keeps the worker's traceback.
    [failure] = [record for record in caplog.records if record.getMessage().startswith("Trial task failed")]
    assert failure.exc_info is None and re.fullmatch(r"Trial task failed for trial \S+: ValueError: Invalid learning "
                                                     r"rate: -1\.0 \(traceback in the trial's error\.txt\)",
                                                     failure.getMessage())
    assert 'raise ValueError(f"Invalid learning rate' not in out + err
    (error_file,) = glob.glob(str(tune_dir / f"*{failed[0]['trial']}*" / "error.txt"))
    with open(error_file) as handle:
        assert 'raise ValueError(f"Invalid learning rate' in handle.read()
    assert len(finished) == 2 and all(row["status"] == "COMPLETED" and row["evaluations"] == 1 for row in finished)

    # The selected configuration is the finished trial with the better validation metric.
    scores = {row["learning_rate"]: row["valid_ndcg@10"] for row in finished}
    assert all(score is not None for score in scores.values())
    best_lr = max(scores, key=scores.get)
    assert result.best["learning_rate"] == best_lr and result.best_config["learning_rate"] == best_lr
    # The test split is evaluated once, for the best trial, from its checkpoint (whose validation score matches).
    assert set(result.test_result) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    assert math.isclose(result.valid_result["ndcg@10"], result.best["valid_ndcg@10"], abs_tol=1e-4)
    assert os.path.dirname(result.best_checkpoint) == str(tune_dir / "checkpoints" / result.best["trial"])

    # The tokenizer was fitted once: one trial fitted it, the other finished trial loaded it from the cache.
    tokenizer_seconds = sorted(row["tokenizer_seconds"] for row in finished)
    assert tokenizer_seconds[0] == 0.0 and tokenizer_seconds[1] > 0.0
    assert len(glob.glob(str(cache_dir / "tiny-beauty" / "sid-*.pt"))) == 1
    assert "Tokenizer fitted in 1 trial(s)" in out

    # Every trial has its own checkpoint directory.
    checkpoints = {row["trial"]: glob.glob(str(tune_dir / "checkpoints" / row["trial"] / "*.pth")) for row in rows}
    assert all(len(checkpoints[row["trial"]]) == 1 for row in finished)

    # The table: printed, and saved as CSV with one row per trial.
    with open(tune_dir / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 3 and {"trial", "status", "learning_rate", "valid_ndcg@10", "tokenizer_seconds",
                                "seconds", "error"} <= set(table[0])
    assert all(float(row["seconds"]) > 0 for row in table)
    assert "ERROR" in out and "Invalid learning rate" in out and "valid_ndcg@10" in out

    # best_config.yaml holds the tuned keys with model and dataset, and works with --config_files.
    with open(tune_dir / "best_config.yaml") as handle:
        best = yaml.safe_load(handle)
    assert best == {"model": "TIGER", "dataset": "tiny-beauty", "learning_rate": best_lr}
    config = GenRecConfig(model="TIGER", dataset="tiny-beauty", config_file_list=[str(tune_dir / "best_config.yaml")],
                          config_dict={"data_path": overrides["data_path"], "load_col": overrides["load_col"]})
    assert config["learning_rate"] == best_lr


def test_max_concurrent_limits_the_trial_generator(tiny, tmp_path, monkeypatch):
    """--max_concurrent reaches the generator that hands out trials (Tune ignores `max_concurrent_trials` beside a
    SearchGenerator, and then runs as many trials as the CPUs allow). The Tuner is replaced: only its arguments
    are read, no Ray starts."""
    from recbole_genrec import compat, tuning

    compat.apply()
    import ray
    from ray import tune

    class Stop(Exception):
        pass

    seen = {}

    class RecordingTuner:
        def __init__(self, trainable, param_space, tune_config, run_config):
            seen["generator"], seen["tune_limit"] = tune_config.search_alg, tune_config.max_concurrent_trials

        def fit(self):
            raise Stop

    monkeypatch.setattr(tune, "Tuner", RecordingTuner)
    monkeypatch.setattr(tune, "with_parameters", lambda trainable, **kwargs: trainable)  # puts into Ray's store
    monkeypatch.setattr(tune, "with_resources", lambda trainable, resources: trainable)
    monkeypatch.setattr(tuning, "init_ray", lambda *args: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(tuning, "_check_workers_have_shims", lambda: None)
    hyper = tmp_path / "TIGER.hyper"
    hyper.write_text("learning_rate choice [0.003, 0.001]\n")
    overrides = tiny(**TINY_TIGER)
    del overrides["dataset"], overrides["checkpoint_dir"]
    for limit, expected in ((1, 1), (None, 0)):
        with pytest.raises(Stop):
            tuning.run_tuning("TIGER", "tiny-beauty", str(hyper), config_dict=overrides, trials=2,
                              max_concurrent=limit, tune_dir=str(tmp_path / f"search-{limit}"))
        assert seen["generator"].max_concurrent == expected and seen["tune_limit"] is None
