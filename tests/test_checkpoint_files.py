"""Each run writes and reloads its own checkpoint, whole (recbole_genrec/trainer.py `unique_checkpoint_file`,
`GenRecTrainer._save_checkpoint`)."""
import multiprocessing
import os

import pytest
import torch

from recbole_genrec import safety

from conftest import FIXTURES

SAME_SECOND = "Dec-07-2026_10-00-00"


def _settings(checkpoint_dir, hidden_size):
    return {"data_path": FIXTURES, "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "epochs": 2,
            "eval_step": 1, "checkpoint_dir": checkpoint_dir, "seed": 2020, "state": "WARNING",
            "MAX_ITEM_LIST_LENGTH": 10, "hidden_size": hidden_size, "inner_size": 2 * hidden_size, "gpu_id": "",
            "show_progress": False}


def _run_in_same_second(checkpoint_dir, hidden_size, start, results):
    """A whole SASRec run whose clock reads the same second as its sibling's (RecBole's checkpoint name)."""
    import recbole_genrec.trainer as trainer_module
    from recbole_genrec.quick_start import run_recbole_genrec

    torch.set_num_threads(1)
    trainer_module.get_local_time = lambda: SAME_SECOND
    start.wait()
    result = run_recbole_genrec("SASRec", "tiny-beauty", config_dict=_settings(checkpoint_dir, hidden_size))
    results.put((hidden_size, result["checkpoint"], result["test_result"]))


def test_concurrent_runs_keep_their_own_checkpoints(tmp_path):
    """Two runs with different widths, started together in one second, into one checkpoint_dir: each tests (and
    keeps) its own weights. With one shared file a run would reload its sibling's weights (a size mismatch) or a
    half-written file."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    runs = [context.Process(target=_run_in_same_second, args=(str(tmp_path), hidden, start, results))
            for hidden in (16, 32)]
    for run in runs:
        run.start()
    finished = [results.get(timeout=600) for _ in runs]
    for run in runs:
        run.join(timeout=60)
        assert run.exitcode == 0
    assert len({checkpoint for _, checkpoint, _ in finished}) == 2
    for hidden_size, checkpoint_file, test_result in finished:
        assert SAME_SECOND in os.path.basename(checkpoint_file)
        checkpoint = safety.load_checkpoint(checkpoint_file)
        assert checkpoint["config"]["hidden_size"] == hidden_size
        assert checkpoint["state_dict"]["item_embedding.weight"].shape[1] == hidden_size
        assert set(test_result) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(c) for _, c, _ in finished)  # no temporary left


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A save that dies half-way (a full disk, a kill) leaves the last whole checkpoint and no partial file."""
    from recbole_genrec.quick_start import prepare_run
    from recbole_genrec.trainer import GenRecTrainer

    config, _, model, *_ = prepare_run("SASRec", "tiny-beauty", None, _settings(str(tmp_path), 16))
    trainer = GenRecTrainer(config, model)
    trainer._save_checkpoint(0, verbose=False)
    before = safety.load_checkpoint(trainer.saved_model_file)["state_dict"]

    def dies_half_way(state, path, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space left"):
        trainer._save_checkpoint(1, verbose=False)
    monkeypatch.undo()
    after = safety.load_checkpoint(trainer.saved_model_file)["state_dict"]
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert os.listdir(tmp_path) == [os.path.basename(trainer.saved_model_file)]
