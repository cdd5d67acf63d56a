"""benchmarks/run_benchmark.py on the tiny fixture, and the trainer's device-resident batches and time budget.
Timings are reported by these runs, never asserted."""
import csv
import math
import os
import sys

import pytest
import torch

from conftest import ROOT, TINY_TIGER
from recbole_genrec.config import GenRecConfig
from recbole_genrec.data import create_dataset, data_preparation
from recbole_genrec.data.device_batches import DeviceBatches
from recbole_genrec.quick_start import run_recbole_genrec

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import run_benchmark  # noqa: E402
from common import run_stock_recbole  # noqa: E402

METRICS = ["test_recall@5", "test_recall@10", "test_ndcg@5", "test_ndcg@10"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread here: nothing is timed, and on a 2-core machine shared with other jobs two OpenMP threads
    stall each other (tiny matrix products measured 40x slower), which tripled this file's time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _argv(tiny, out, *options):
    """The tiny config as the script's --key=value overrides, TINY_TIGER as --TIGER:key=value."""
    argv = ["--dataset=tiny-beauty", f"--out={out}", *options]
    argv += [f"--{key}={value!r}" for key, value in tiny().items() if key != "dataset"]
    return argv + [f"--TIGER:{key}={value!r}" for key, value in TINY_TIGER.items()]


def test_benchmark_table_for_sasrec_stock_sasrec_and_tiger(tiny, workdir):
    out = workdir / "bench"
    run_benchmark.main(_argv(tiny, out, "--models=SASRec,TIGER", "--stock_sasrec"))
    with open(out / "results.csv") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["SASRec", "TIGER", "SASRec (stock RecBole)"]
    expected = {"runner", *METRICS, "text_seconds", "tokenizer_seconds", "train_seconds", "test_eval_seconds",
                "train_seq_per_s", "eval_users_per_s", "peak_gpu_memory_mb", "parameters", "text_encoder",
                "hardware", "date", "command"}
    assert expected <= set(rows["TIGER"])
    for row in rows.values():
        assert all(0.0 <= float(row[m]) <= 1.0 and math.isfinite(float(row[m])) for m in METRICS)
        assert float(row["train_seq_per_s"]) > 0 and float(row["eval_users_per_s"]) > 0
    assert float(rows["TIGER"]["text_seconds"]) >= 0 and rows["TIGER"]["text_encoder"] == "all-MiniLM-L6-v2"
    # The plugin's SASRec (device-resident batches; bf16 is a no-op on a CPU) is stock RecBole's, bit for bit.
    assert [rows["SASRec"][m] for m in METRICS] == [rows["SASRec (stock RecBole)"][m] for m in METRICS]
    markdown = (out / "results.md").read_text()
    assert "| SASRec (stock RecBole) | stock RecBole |" in markdown and "run_benchmark.py" in markdown
    assert (out / "results.png").stat().st_size > 1000


def test_study_retrains_tokenizer_and_evaluates_decoding_on_one_model(tiny, workdir):
    out = workdir / "study"
    run_benchmark.main(_argv(tiny, out, "--study", "--study_histories=10", "--study_beams=10,20"))
    with open(out / "study.csv") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["TIGER base", "TIGER tokenizer RQKMeans", "TIGER base, beam 10", "TIGER base, beam 20",
                          "TIGER base, beam 10, unconstrained"]
    assert rows["TIGER tokenizer RQKMeans"]["tokenizer"] == "RQKMeans"
    for row in rows.values():
        assert all(math.isfinite(float(row[m])) for m in METRICS)
        assert 0.0 <= float(row["invalid_rate"]) <= 1.0
    assert float(rows["TIGER base, beam 20"]["invalid_rate"]) == 0.0  # constrained: only valid IDs
    # The inference-only rows reuse the trained base model: beam 10 constrained reproduces its test metrics.
    assert [rows["TIGER base, beam 10"][m] for m in METRICS] == [rows["TIGER base"][m] for m in METRICS]


def test_device_batches_are_recbole_loader_batches(tiny):
    config = GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(train_batch_size=300))
    train_data, _, _ = data_preparation(config, create_dataset(config))
    state = train_data.generator.get_state()
    stock = [batch for _ in range(2) for batch in train_data]  # two epochs: the generator's draws must match
    train_data.generator.set_state(state)
    batches = DeviceBatches(train_data, "cpu")
    ours = [batch for _ in range(2) for batch in batches]
    assert len(ours) == len(stock) == 2 * len(batches)
    for theirs, mine in zip(stock, ours):
        assert set(mine.interaction) == {"user_id", "item_id", "item_id_list", "item_length"}
        assert all(torch.equal(mine[field], theirs[field]) for field in mine.interaction)


def test_device_batches_refuse_negative_sampling(tiny):
    config = GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(
        loss_type="BPR", train_neg_sample_args={"distribution": "uniform", "sample_num": 1}))
    train_data, _, _ = data_preparation(config, create_dataset(config))
    with pytest.raises(ValueError, match="negative sampling"):
        DeviceBatches(train_data, "cpu")


def test_time_budget_stops_after_first_epoch_and_keeps_a_checkpoint(tiny):
    config = tiny(epochs=5, train_time_budget=0)
    plugin = run_recbole_genrec("SASRec", "tiny-beauty", config_dict=dict(config, device_batches=True))
    stock = run_stock_recbole("SASRec", "tiny-beauty", config_dict=config)  # the same budget for the reference
    for result in (plugin, stock):
        assert result["epochs"] == 1 and result["stopped_by_time_budget"]
        assert os.path.isfile(result["checkpoint"]) and result["test_result"]["recall@10"] >= 0
