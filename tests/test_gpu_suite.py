"""The GPU suite's rehearsal (benchmarks/gpu_suite.sh --rehearse: the GPU run's code paths on the CPU and the test
fixture), its settings, the bf16 autocast it trains under, and faiss's CPU fallback. Timings are never asserted."""
import csv
import math
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest
import torch

from conftest import ROOT
from recbole_genrec.quick_start import prepare_run
from recbole_genrec.tokenization import faiss_index
from recbole_genrec.tokenization.kmeans import kmeans, nearest_centroid

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_suite  # noqa: E402

METRICS = ["test_recall@5", "test_recall@10", "test_ndcg@5", "test_ndcg@10"]


def test_rehearsal_writes_one_row_per_model_in_order(workdir):
    """The same script as on the GPU host, on the fixture with a 1-second suite budget: every model trains one epoch
    of two (the budget stops it), is tested, and lands in the table with its timings, versions and settings."""
    out = workdir / "gpu-suite"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "OUT": str(out)}
    env.pop("GPU_SUITE_START", None)
    # The text embeddings of the fixture come from the cache the other tests share (computed here when alone).
    result = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--rehearse", f"--cache_dir={workdir / 'cache'}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out / "gpu-suite.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model"] for row in rows] == list(gpu_suite.MODELS)
    for row in rows:
        assert not row.get("error"), row["error"]
        assert all(0.0 <= float(row[m]) <= 1.0 and math.isfinite(float(row[m])) for m in METRICS)
        assert row["epochs"] == "1" and row["stopped_by_time_budget"] == "True"
        assert float(row["train_seq_per_s"]) > 0 and float(row["eval_users_per_s"]) > 0
        assert float(row["prepare_seconds"]) >= 0 and float(row["train_time_budget"]) == 0.0
        assert row["runner"] == "plugin, device batches, bf16 autocast" and row["gpu"] == "no GPU"
        assert "torch " in row["versions"] and "faiss " in row["versions"] and "(CPU index)" in row["versions"]
        assert "epochs " in row["settings"]
    # The slot's scaling: TIGER's batch 256 -> 2048, its learning rate by sqrt(8); SASRec's protocol batch stays.
    settings = {row["model"]: row["settings"] for row in rows}
    assert "train_batch_size 256->2048" in settings["TIGER"] and "learning_rate 0.001->0.00283" in settings["TIGER"]
    assert "train_batch_size" not in settings["SASRec"]
    markdown = (out / "gpu-suite.md").read_text()
    assert markdown.startswith("# GPU suite rehearsal on tiny-beauty") and "| LIGER |" in markdown
    assert "[gpu-suite] LIGER done" in (out / "gpu-suite.log").read_text()


def test_failed_model_gets_an_error_row_and_the_suite_goes_on(workdir, monkeypatch):
    out = workdir / "gpu-suite-failing"
    monkeypatch.setitem(gpu_suite.REHEARSAL, "RPG", {**gpu_suite.REHEARSAL["RPG"], "rpg_inference": "nonsense"})
    rows = gpu_suite.main(["--rehearse", "--models=RPG,SASRec", f"--out={out}", "--epochs=1",
                           f"--cache_dir={workdir / 'cache'}"])
    assert [row["model"] for row in rows] == ["RPG", "SASRec"]
    assert "rpg_inference" in rows[0]["error"] and not rows[1].get("error")
    with open(out / "gpu-suite.csv") as handle:
        assert [row["model"] for row in csv.DictReader(handle)] == ["RPG", "SASRec"]


def test_prefit_packs_the_caches_that_the_suite_then_hits(workdir):
    """--prefit fits the tokenizer here and packs the cache; the suite unpacks it and fits nothing."""
    out = workdir / "gpu-suite-prefit"
    common = ["--rehearse", "--models=RPG", f"--out={out}", "--epochs=1"]
    gpu_suite.main([*common, "--prefit", f"--cache_dir={workdir / 'cache'}"])
    assert (out / "gpu-suite-cache.tar.xz").stat().st_size > 0
    rows = gpu_suite.main([*common, f"--cache_dir={workdir / 'unpacked-cache'}"])
    assert not rows[0].get("error") and rows[0]["tokenizer_seconds"] == 0.0  # a cache hit
    assert list((workdir / "unpacked-cache" / "tiny-beauty").glob("sid-OPQ-*.pt"))


def test_gpu_settings_scale_batch_and_learning_rate(tmp_path):
    args = gpu_suite.parse_args([f"--out={tmp_path}"])
    assert args.dataset == "amazon-beauty" and args.budget == 540.0
    tiger, _ = gpu_suite.model_settings("TIGER", args)
    assert tiger["train_batch_size"] == 2048 and tiger["learning_rate"] == pytest.approx(0.001 * math.sqrt(8))
    assert tiger["tokenizer_params"]["epochs"] == 300 and tiger["tokenizer_params"]["codebook_size"] == 256
    assert tiger["device_batches"] is True and tiger["mixed_precision"] == "bf16"
    assert tiger["cache_dir"] == gpu_suite.SUITE_CACHE and args.archive == gpu_suite.PREFIT_ARCHIVE
    rpg, changed = gpu_suite.model_settings("RPG", args)
    assert rpg["learning_rate"] == 0.01 and "learning_rate" not in changed  # capped at the papers' largest
    sasrec, _ = gpu_suite.model_settings("SASRec", args)
    assert sasrec["train_batch_size"] == 2048 and sasrec["learning_rate"] == 1e-3 and sasrec["loss_type"] == "CE"
    letter, _ = gpu_suite.model_settings("LETTER", args)  # every model's settings pass the config checks
    assert letter["cf_params"]["epochs"] == 20 and letter["cf_params"]["hidden_size"] == 32
    liger, _ = gpu_suite.model_settings("LIGER", args)
    assert liger["eval_batch_size"] == 1024 and liger["warmup_ratio"] == 0.05
    assert sum(gpu_suite.SHARES.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in the suite"):
        gpu_suite.parse_args(["--models=SASRec,EAGER"])


def test_bf16_autocast_runs_on_the_cpu_in_training(tiny, workdir):
    """`mixed_precision: bf16` autocasts on whatever device trains (the rehearsal's CPU too)."""
    from recbole_genrec.trainer import GenRecTrainer

    config, _, model, train_data, _, _ = prepare_run("SASRec", "tiny-beauty", None,
                                                     tiny(mixed_precision="bf16", device_batches=True))
    seen = []
    loss = model.calculate_loss

    def recording_loss(interaction):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return loss(interaction)

    model.calculate_loss = recording_loss
    trainer = GenRecTrainer(config, model)
    trainer.fit(train_data, None, saved=False)
    assert seen and all(seen)
    assert not torch.is_autocast_enabled("cpu")  # only inside the loss


@pytest.mark.skipif(faiss_index.gpu_available(), reason="faiss-gpu with a visible GPU: the GPU index is taken")
def test_faiss_takes_the_cpu_index_without_a_gpu(monkeypatch):
    """faiss-cpu here: no GPU index, whatever size; also when faiss claims a GPU but was built without GPU classes."""
    assert type(faiss_index.flat_l2(8, 10**6)) is faiss.IndexFlatL2
    assert type(faiss_index.flat_l2(8, 10**6, gpu=True)) is faiss.IndexFlatL2
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    if not hasattr(faiss, "StandardGpuResources"):
        assert not faiss_index.gpu_available()
    monkeypatch.setattr(faiss_index, "gpu_available", lambda: True)
    assert faiss_index.use_gpu(10**6) and not faiss_index.use_gpu(100)  # small problems stay on the CPU
    assert not faiss_index.use_gpu(10**6, gpu=False)


def test_kmeans_on_the_cpu_fallback_matches_an_explicit_cpu_run():
    points = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    centroids, assignments = kmeans(points, 8, niter=10, seed=3)
    cpu_centroids, cpu_assignments = kmeans(points, 8, niter=10, seed=3, gpu=False)
    np.testing.assert_array_equal(centroids, cpu_centroids)
    np.testing.assert_array_equal(assignments, cpu_assignments)
    nearest, _ = nearest_centroid(points, centroids)
    np.testing.assert_array_equal(nearest, assignments)
