"""Several processes (PyTorch DDP, gloo on the CPU): training shards, evaluation shards and gathers, rank 0 fits the
tokenizer (recbole_genrec/distributed.py)."""
import os

import pytest

from recbole_genrec import distributed
from recbole_genrec.config import GenRecConfig
from recbole_genrec.quick_start import load_data_and_model, run_recbole_genrec
from recbole_genrec.trainer import GenRecTrainer

from conftest import TINY_TIGER

# Without shuffling and dropout, two processes with half batches each take the same optimiser steps as one process
# (DDP averages the two half-batch gradients); only float summation order (and the sampler's one padding row in
# the last batch) differ. The tiny fixture has 250 test users: 0.01 is 2.5 users' hits at K=10.
METRIC_TOLERANCE = 0.01


@pytest.fixture
def two_cpu_processes(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited by the spawned processes: 2 x 1 thread on 2 cores


def deterministic_sasrec(tiny, tmp_path, nproc):
    return tiny(epochs=2, shuffle=False, hidden_dropout_prob=0.0, attn_dropout_prob=0.0, nproc=nproc,
                checkpoint_dir=str(tmp_path / f"saved-{nproc}"))


def test_two_processes_train_like_one_and_each_rank_evaluates_half_the_users(tiny, tmp_path, two_cpu_processes):
    one = run_recbole_genrec("SASRec", "tiny-beauty", config_dict=deterministic_sasrec(tiny, tmp_path, 1))
    two = run_recbole_genrec("SASRec", "tiny-beauty", config_dict=deterministic_sasrec(tiny, tmp_path, 2))

    assert one["processes"] == 1 and two["processes"] == 2
    assert two["test_users"] == one["test_users"] == 250
    assert two["test_users_per_rank"] == [125, 125]  # each rank ranked its half; the metrics cover all 250
    for key, value in one["test_result"].items():
        assert abs(two["test_result"][key] - value) <= METRIC_TOLERANCE, key
    # One checkpoint, written by rank 0 and named alike on both ranks (they loaded it for the test split).
    assert os.listdir(tmp_path / "saved-2") == [os.path.basename(two["checkpoint"])]

    # Evaluation sharding is exact: the two-process model, reloaded in this single process, scores the same.
    config, model, _, _, _, test_data = load_data_and_model(two["checkpoint"])
    assert config["single_spec"] and not distributed.active()
    alone = GenRecTrainer(config, model).evaluate(test_data, load_best_model=False)
    assert {k: float(v) for k, v in alone.items()} == {k: float(v) for k, v in two["test_result"].items()}


def test_tiger_on_two_processes_fits_its_tokenizer_once_and_trains_on_device_shards(tiny, tmp_path,
                                                                                      two_cpu_processes):
    # A tokenizer setting no other test uses: a new cache key, so this run fits it (the session's text embeddings
    # are reused).
    tokenizer = {**TINY_TIGER["tokenizer_params"], "epochs": 17}
    result = run_recbole_genrec("TIGER", "tiny-beauty", config_dict=tiny(
        **{**TINY_TIGER, "tokenizer_params": tokenizer}, nproc=2, device_batches=True,
        checkpoint_dir=str(tmp_path / "saved")))

    fitted, loaded = result["tokenizer_seconds_per_rank"]
    assert fitted > 0 and loaded == 0.0  # rank 1 waited for rank 0's semantic IDs and read them from the cache
    assert result["test_users_per_rank"] == [125, 125]
    assert all(0 <= value <= 1 for value in result["test_result"].values())
    assert result["epochs"] == 1 and os.path.isfile(result["checkpoint"])


@pytest.mark.parametrize("settings, message", [
    ({"nproc": 2, "world_size": 4}, "set ip and port"),
    ({"nproc": 2, "world_size": 2, "offset": 1}, "exceeds world_size"),
])
def test_inconsistent_process_settings_are_refused_before_any_work(tiny, settings, message):
    config = GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(**settings))
    assert distributed.spawn_needed(config)
    with pytest.raises(ValueError, match=message):
        distributed.spawn(run_recbole_genrec, config, {})


def _broadcast_worker(rank, init_file, out_dir):
    import torch
    import torch.distributed as dist
    from torch import nn

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # different weights on each rank before the broadcast
        module = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
        distributed.broadcast_state(module)
        torch.save(module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_the_best_weights_reach_every_rank_by_broadcast_not_by_their_file(tmp_path, two_cpu_processes):
    # On several machines only global rank 0 has the checkpoint file: the others receive its weights.
    import torch
    import torch.multiprocessing as mp
    from torch import nn

    mp.spawn(_broadcast_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    torch.manual_seed(0)
    expected = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).state_dict()
    for rank in (0, 1):
        received = torch.load(tmp_path / f"rank{rank}.pt")
        assert all(torch.equal(received[key], value) for key, value in expected.items()), rank


def test_only_global_rank_zero_writes_the_checkpoint(tiny, tmp_path, monkeypatch):
    # A second machine's first process has local_rank 0 (RecBole's writer condition) but is not global rank 0.
    from recbole_genrec import registry
    from recbole_genrec.data import create_dataset, data_preparation

    config = GenRecConfig(model="SASRec", dataset="tiny-beauty",
                          config_dict=tiny(checkpoint_dir=str(tmp_path / "saved")))
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    trainer = GenRecTrainer(config, registry.get_model("SASRec")(config, train_data._dataset))
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    trainer._save_checkpoint(0, verbose=False)
    assert not os.path.exists(trainer.saved_model_file)
    monkeypatch.setattr(distributed, "is_main_process", lambda: True)
    trainer._save_checkpoint(0, verbose=False)
    assert os.path.isfile(trainer.saved_model_file)
