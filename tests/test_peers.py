"""benchmarks/peers.py --quick: our TIGER and RPG beside cornac's on the tiny fixture, same split, same IDs, same
scorer. Speeds and metrics are reported by the run, never asserted against each other."""
import csv
import math
import os
import sys

import pytest

from conftest import FIXTURES, ROOT

pytest.importorskip("cornac")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import common  # noqa: E402
import peers  # noqa: E402

TINY = ["--dataset=tiny-beauty", f"--data_path={FIXTURES}", "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}",
        "--text_fields=['title', 'brand', 'categories', 'price']", "--threads=1", "--state=WARNING"]
METRICS = ["recall@5", "recall@10", "ndcg@5", "ndcg@10"]


def test_quick_peers_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the rows' caches, checkpoints and logs stay in the test's folder
    rows = peers.main(["--models=TIGER,RPG", "--seeds=1", f"--out={tmp_path / 'out'}", "--quick", *TINY])
    with open(tmp_path / "out" / "peers.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [(r["model"], r["implementation"]) for r in table] == [
        ("TIGER", "recbole_genrec"), ("TIGER", "cornac"), ("RPG", "recbole_genrec"), ("RPG", "cornac")]
    assert {"model", "implementation", "seed", "recall@10", "ndcg@10", "train_seq_per_s",
            "test_users_per_s", "peak_rss_mb"} <= set(table[0])
    for row in table:
        assert all(0.0 <= float(row[m]) <= 1.0 and math.isfinite(float(row[m])) for m in METRICS)
        assert float(row["train_seq_per_s"]) > 0 and float(row["test_users_per_s"]) > 0
        assert float(row["peak_rss_mb"]) > 100
        assert int(row["test_users"]) == 250  # every test user of the fixture, both implementations
    # Both implementations trained on the same RecBole training rows.
    assert len({r["train_sequences"] for r in table}) == 1
    # The scorer check: RecBole's Recall/NDCG on cornac's lists equal cornac's own metrics on the same lists, up to
    # RecBole's rounding to metric_decimal_place (4) decimals.
    for row in rows:
        if row["implementation"] == "cornac":
            assert row["recall@10"] == pytest.approx(row["cornac_recall@10"], abs=5e-5)
            assert row["ndcg@10"] == pytest.approx(row["cornac_ndcg@10"], abs=5e-5)


def test_the_rebuilt_sequences_are_recboles_split(tiny):
    """The sessions handed to cornac are RecBole's leave-one-out split, item for item (checked inside), and give
    cornac as many training prefixes as RecBole's augmented training split."""
    settings = peers.settings_for("TIGER", quick=True, overrides={"load_col": tiny()["load_col"],
                                                                  "text_fields": tiny()["text_fields"],
                                                                  "cache_dir": tiny()["cache_dir"]})
    config, dataset, train_data, valid_data, test_data, _ = common.prepare_split(
        "TIGER", "tiny-beauty", peers.plugin_config("TIGER", settings, 2020, FIXTURES))
    sequences = peers.user_sequences(config, dataset, valid_data, test_data)
    peers.check_training_rows(sequences, train_data)
    assert len(sequences) == 250 and sum(map(len, sequences.values())) == 2684
