"""benchmarks/official_parity.py's row bookkeeping on the tiny fixture: a row paused by `--pause_after` writes no
result, the same command trains it on from its resume file, and a finished row is skipped."""
import csv
import os
import sys

from conftest import FIXTURES, ROOT, TINY_TIGER

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import official_parity  # noqa: E402


def test_a_paused_row_continues_and_a_finished_row_is_skipped(tmp_path, monkeypatch, tiny, capsys):
    settings = tiny(**TINY_TIGER, epochs=2, checkpoint_dir=str(tmp_path / "saved"))
    for key in ("seed", "data_path", "dataset"):
        settings.pop(key)
    monkeypatch.setattr(official_parity, "settings_for", lambda model, quick=False: dict(settings))
    csv_path = tmp_path / "parity.csv"
    command = ["--models=TIGER", "--implementations=recbole_genrec", "--seeds=2020", "--dataset=tiny-beauty",
               f"--data_path={FIXTURES}", f"--csv={csv_path}", f"--work_dir={tmp_path / 'resume'}",
               f"--log_dir={tmp_path / 'logs'}", "--pause_after=0", "--threads=1"]

    official_parity.main(command)
    assert "paused after 1 of 2 epochs" in capsys.readouterr().out
    assert not csv_path.exists()
    assert (tmp_path / "resume" / "TIGER-recbole_genrec-2020-tiny-beauty.pth").is_file()

    official_parity.main(command)
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], r["seed"], r["epochs"]) for r in rows] == [("TIGER", "2020", "2")]
    assert 0.0 <= float(rows[0]["recall@10"]) <= 1.0

    official_parity.main(command)
    assert "in " + str(csv_path) + ", skipped" in capsys.readouterr().out
