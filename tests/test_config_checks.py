"""Mistakes caught before any work: misspelt or mistyped settings, a valid_metric the run does not compute, a top-K
longer than the catalogue, a bad second model of a list; and the installed command's exit codes."""
import csv
import logging
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from recbole_genrec import cli
from recbole_genrec.config import GenRecConfig, known_config_keys

from conftest import ROOT


def _argv(tiny, models="SASRec", **overrides):
    """Command-line arguments for the tiny fixture (every key of `tiny` as --key=value)."""
    argv = [f"--model={models}", "--dataset=tiny-beauty"]
    for key, value in tiny(**overrides).items():
        if key != "dataset":
            argv.append(f"--{key}={value}" if isinstance(value, str) else f"--{key}={value!r}")
    return argv


@pytest.fixture
def no_work(monkeypatch):
    """Any data reading or training fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("data was read or a model trained")

    for target in ("recbole_genrec.quick_start.create_dataset", "recbole_genrec.quick_start.data_preparation",
                   "recbole_genrec.quick_start.run_recbole_genrec", "recbole_genrec.data.create_dataset"):
        monkeypatch.setattr(target, forbidden)


@pytest.mark.parametrize("option, suggestion", [
    ("--epoch=1", "--epochs"), ("--result_file=x.csv", "--results_file"), ("--learning_rat=0.01", "--learning_rate"),
    ("--beamsize=20", "--beam_size"), ("--max_item_list_length=5", "--MAX_ITEM_LIST_LENGTH"),
])
def test_misspelt_option_is_refused_before_any_data_is_read(tiny, no_work, option, suggestion):
    start = time.time()
    with pytest.raises(ValueError, match=rf"Unknown setting {option.split('=')[0]} \(did you mean {suggestion}\b"):
        cli.run(_argv(tiny) + [option])
    assert time.time() - start < 1.0


def test_misspelt_key_is_refused_by_the_config_too(tiny):
    message = r"Unknown setting epoch \(did you mean epochs\?\).*allow_unknown_keys: \[epoch\]"
    with pytest.raises(ValueError, match=message):
        GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(epoch=1))


def test_deliberately_new_key_passes_when_allowed(tiny, tmp_path, monkeypatch):
    config = GenRecConfig(model="SASRec", dataset="tiny-beauty",
                          config_dict=tiny(my_new_key=3, allow_unknown_keys=["my_new_key"]))
    assert config["my_new_key"] == 3
    with pytest.raises(ValueError, match="Unknown setting other_key"):  # only the named keys pass
        GenRecConfig(model="SASRec", dataset="tiny-beauty",
                     config_dict=tiny(my_new_key=3, other_key=1, allow_unknown_keys=["my_new_key"]))
    # On the command line, and allowed in a config file
    seen = {}

    class Stop(Exception):
        pass

    def fake_run(model, dataset, config_file_list=None, config_dict=None, **kwargs):
        seen.update(config_dict)
        raise Stop

    monkeypatch.setattr("recbole_genrec.quick_start.run_recbole_genrec", fake_run)
    with pytest.raises(Stop):
        cli.run(_argv(tiny) + ["--allow_unknown_keys=[my_new_key]", "--my_new_key=3"])
    assert seen["my_new_key"] == 3
    allow = tmp_path / "allow.yaml"
    allow.write_text("allow_unknown_keys: [my_new_key]\n")
    with pytest.raises(Stop):
        cli.run(_argv(tiny) + [f"--config_files={allow}", "--my_new_key=4"])
    assert seen["my_new_key"] == 4


@pytest.mark.parametrize("model, option, message", [
    ("SASRec", "--learning_rate=abc", r"learning_rate must be a number \(default 0.001\), got 'abc'"),
    ("SASRec", "--epochs=abc", r"epochs must be an int .*got 'abc'"),
    ("SASRec", "--epochs=1.5", r"epochs must be an int .*got 1.5"),
    ("TIGER", "--beam_size=abc", r"beam_size must be an int \(default 20\), got 'abc'"),
    ("SASRec", "--show_progress=3", r"show_progress must be a bool"),
    ("SASRec", "--topk=abc", r"topk must be an int or a list"),
])
def test_wrong_type_is_refused_with_the_key_named(tiny, no_work, model, option, message):
    start = time.time()
    with pytest.raises(ValueError, match=message):
        cli.run(_argv(tiny, models=model) + [option])
    assert time.time() - start < 1.0


def test_int_passes_for_a_float_and_none_for_anything(tiny):
    config = GenRecConfig(model="SASRec", dataset="tiny-beauty",
                          config_dict=tiny(learning_rate=1, clip_grad_norm={"max_norm": 1.0}, topk=10,
                                           valid_metric="NDCG@10", weight_decay=None))
    assert config["learning_rate"] == 1 and config["topk"] == [10]


@pytest.mark.parametrize("overrides, message", [
    ({"valid_metric": "NDCG@20"}, r"valid_metric 'NDCG@20' is not computed: topk \[5, 10\] has no K=20"),
    ({"valid_metric": "MRR@10"}, r"valid_metric 'MRR@10' is not computed: mrr is not in metrics"),
    ({"valid_metric": "NDCG"}, r"ndcg is scored at a K"),
    ({"metrics": ["Recal", "NDCG"]}, r"Unknown metric 'Recal' in metrics \(did you mean recall\?\)"),
])
def test_valid_metric_the_run_does_not_compute_is_refused_at_config_time(tiny, overrides, message):
    with pytest.raises(ValueError, match=message):
        GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(**overrides))


def test_topk_longer_than_the_catalogue_is_refused_before_training_and_the_config_dump(tiny, monkeypatch, caplog):
    from recbole_genrec.quick_start import init_logger, run_recbole_genrec

    def forbidden(*args, **kwargs):
        raise AssertionError("split or trained")

    def init_logger_and_capture(config):  # RecBole's init_logger replaces the root logger's handlers
        init_logger(config)
        logging.getLogger().addHandler(caplog.handler)

    monkeypatch.setattr("recbole_genrec.quick_start.data_preparation", forbidden)
    monkeypatch.setattr("recbole_genrec.quick_start.init_logger", init_logger_and_capture)
    try:
        with caplog.at_level(logging.INFO), pytest.raises(
                ValueError, match=r"topk \[10, 1000\] asks for 1000 items, but tiny-beauty has 287 items"):
            run_recbole_genrec("SASRec", "tiny-beauty", config_dict=tiny(topk=[10, 1000], state="INFO"))
        assert not [r for r in caplog.records if "Hyper Parameters" in r.getMessage()]
        caplog.clear()  # a topk that fits: the config is logged, after the check
        with caplog.at_level(logging.INFO), pytest.raises(AssertionError, match="split or trained"):
            run_recbole_genrec("SASRec", "tiny-beauty", config_dict=tiny(state="INFO"))
        assert [r for r in caplog.records if "General Hyper Parameters" in r.getMessage()]
    finally:
        logging.getLogger().removeHandler(caplog.handler)


def test_misspelt_model_name_leads_with_the_closest_one(tiny, no_work):
    with pytest.raises(ValueError, match=r"^Unknown model 'TIGRE' \(did you mean TIGER\?\)\. Generative models: "):
        cli.run(_argv(tiny, models="TIGRE"))


def test_unknown_dataset_lists_each_folder_once(monkeypatch):
    from recbole_genrec.config import REPO_DATASET_DIR

    monkeypatch.chdir(ROOT)  # ./dataset is the checkout's dataset folder
    with pytest.raises(ValueError, match="Dataset 'no-such-set' not found") as error:
        GenRecConfig(model="SASRec", dataset="no-such-set")
    searched = re.search(r"under (.*)\. Available", str(error.value)).group(1).split(", ")
    assert REPO_DATASET_DIR in searched and len(searched) == len(set(searched)) == 2


def test_bad_second_model_fails_before_the_first_trains(tiny, no_work):
    with pytest.raises(ValueError, match=r"beam_size \(5\) must be >= the largest topk \(10\)"):
        cli.run(_argv(tiny, models="SASRec,TIGER") + ["--beam_size=5"])


def test_hyper_file_key_is_checked_before_ray_starts(tiny, tmp_path, no_work, monkeypatch):
    monkeypatch.setattr("recbole_genrec.tuning.run_tuning", lambda *a, **k: pytest.fail("the search started"))
    hyper = tmp_path / "SASRec.hyper"
    hyper.write_text("learning_rat choice [0.01, 0.001]\n")
    with pytest.raises(ValueError, match=r"SASRec.hyper: Unknown setting learning_rat \(did you mean learning_rate"):
        cli.run(_argv(tiny) + [f"--tune={hyper}"])


def test_console_entry_exit_codes_threads_and_rows_written_at_once(tiny, tmp_path, capsys):
    import faiss

    threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        assert cli.main(_argv(tiny, checkpoint_dir=str(tmp_path / "saved")) + ["--threads=1"]) == 0
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    finally:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(faiss_threads)
    assert "Test results on tiny-beauty" in capsys.readouterr().out

    # A user error after the first model finished: exit 1, one line on stderr, the first row kept in the CSV.
    profile = tmp_path / "profile.yaml"
    profile.write_text("per_model:\n  GRU4Rec: {topk: [10, 1000]}\n")
    results = tmp_path / "rows.csv"
    code = cli.main(_argv(tiny, models="SASRec,GRU4Rec", checkpoint_dir=str(tmp_path / "saved"))
                    + [f"--profile={profile}", f"--results_file={results}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("recbole_genrec: error: topk [10, 1000] asks for")
    with open(results) as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["SASRec"]


@pytest.mark.parametrize("text, line, message", [
    ("epochs: 1\nlearning_rate: !!python/name:os.system\n", 2, "could not determine a constructor"),
    ("epochs: [1\nlearning_rate: 0.01\n", 2, "YAML syntax error: expected ',' or ']'"),
    ("epochs: 1\n  learning_rate: 0.01\n", 2, "YAML syntax error: mapping values are not allowed here"),
])
@pytest.mark.parametrize("option", ["config_files", "profile"])
def test_bad_yaml_on_the_command_line_names_file_and_line(tiny, tmp_path, no_work, capsys, option, text, line,
                                                          message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert cli.main(_argv(tiny) + [f"--{option}={bad}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"recbole_genrec: error: {bad}, line {line}: {message}")


def test_ctrl_c_exits_130_with_one_line_saying_what_was_kept(tiny, tmp_path):
    """A real SIGINT to the command while its second model trains: the first model's row, the second's checkpoint
    and its resume file are kept and named, in one line, without a traceback (and without the deprecation notices
    RecBole's training triggers in pandas and torch)."""
    saved, results, resume = tmp_path / "saved", tmp_path / "rows.csv", tmp_path / "GRU4Rec.state"
    profile = tmp_path / "profile.yaml"  # no early stop: on a loaded machine 500 epochs outlast the signal's sender
    profile.write_text(f"per_model:\n  SASRec: {{epochs: 1}}\n"
                       f"  GRU4Rec: {{epochs: 500, stopping_step: 500, resume_file: {resume}}}\n")
    argv = [arg for arg in _argv(tiny, models="SASRec,GRU4Rec", checkpoint_dir=str(saved)) if "--epochs" not in arg]
    command = [sys.executable, os.path.join(ROOT, "run_recbole_genrec.py"), *argv, f"--profile={profile}",
               f"--results_file={results}", "--threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",  # no PYTHONWARNINGS: the libraries' deprecations stay quiet too
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    # SIGINT at its default, as an interactive shell starts a command: a suite started in the background by a
    # non-interactive shell (`pytest ... &`) ignores SIGINT, a child inherits that, and Python then keeps it ignored
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 300
        while not (list(saved.glob("GRU4Rec-*.pth")) and resume.exists()):  # the second model's first epoch
            assert process.poll() is None and time.time() < deadline, process.stderr.read()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    checkpoint = next(saved.glob("GRU4Rec-*.pth"))
    assert process.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.splitlines() == [f"recbole_genrec: interrupted: kept 1 finished result row in {results}; the last "
                                f"checkpoint written, {checkpoint}; the training state in {resume} (a run given it "
                                f"continues from its last epoch)."]
    with open(results) as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["SASRec"]


def test_console_entry_fails_a_search_in_which_every_trial_failed(monkeypatch, capsys):
    class Failed:
        best, results_csv = None, "ray_results/x/results.csv"

    monkeypatch.setattr(cli, "run", lambda argv=None, kept=None: Failed())
    assert cli.main([]) == 1
    assert "every trial of the search failed" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_every_mode_and_runs_nothing(monkeypatch, capsys, flag):
    monkeypatch.setattr(cli, "run", lambda argv=None, kept=None: pytest.fail("--help must not start a run"))
    assert cli.main(["--model=TIGER", flag]) == 0
    out = capsys.readouterr().out
    assert all(part in out for part in ("--dataset", "--threads", "Tuning mode", "Recommendation mode"))


def test_installed_command_reports_a_user_error_in_one_line():
    command = os.path.join(os.path.dirname(sys.executable), "recbole-genrec")
    if not os.path.isfile(command):
        pytest.skip("the package is not installed in this environment (pip install -e .)")
    completed = subprocess.run([command, "--model=SASRec", "--epoch=1", "--threads=1"], capture_output=True,
                               text=True, cwd=ROOT, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [completed.stderr.strip()]
    assert completed.stderr.startswith("recbole_genrec: error: Unknown setting --epoch (did you mean --epochs?)")


def test_every_key_the_package_reads_is_known():
    """A key read in code needs a default in a yaml file (or a line in config.CODE_KEYS), or the unknown-key
    check would refuse it."""
    package = os.path.join(ROOT, "recbole_genrec")
    pattern = re.compile(r"""\bconfig(?:\.final_config_dict)?(?:\[|\.get\()\s*["'](\w+)["']""")
    read = set()
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as handle:
                    read |= set(pattern.findall(handle.read()))
    assert len(read) > 30 and not read - known_config_keys()
    assert {"epochs", "beam_size", "tokenizer_params", "hidden_size", "text_fields"} <= known_config_keys()
