"""Live progress (recbole_genrec/progress.py): a tqdm bar on a terminal, periodic log lines with rate and ETA
otherwise, in the trainer's training and evaluation loops and the tokenizer's epochs (RecBole's own loops, CF training
included, through the trainer's `tqdm`)."""
import logging

import numpy as np
import pytest
from tqdm import tqdm

from recbole_genrec import progress as progress_module
from recbole_genrec.progress import LoggedProgress, progress
from recbole_genrec.quick_start import run_recbole_genrec
from recbole_genrec.tokenization import build_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def log_every_step(monkeypatch, caplog):
    monkeypatch.setattr(progress_module, "LOG_EVERY_SECONDS", 0.0)
    caplog.set_level(logging.INFO)
    return caplog


def test_a_terminal_gets_a_bar_and_a_log_gets_lines(monkeypatch, log_every_step):
    monkeypatch.setattr(progress_module, "on_terminal", lambda: True)
    bar = progress(range(3), desc="Train")
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2]
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    logged = progress(range(4), desc="\x1b[1;35mTrain     0\x1b[0m")  # RecBole's coloured description
    assert isinstance(logged, LoggedProgress) and list(logged) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in log_every_step.records if r.getMessage().startswith("Train     0: ")]
    assert len(lines) == 4 and lines[-1].startswith("Train     0: 4/4 (100%), ")
    assert all(" it/s, ETA " in line for line in lines)


def test_a_short_loop_logs_nothing(caplog):
    caplog.set_level(logging.INFO)
    assert list(LoggedProgress(range(5), desc="Evaluate")) == list(range(5))
    assert "Evaluate:" not in caplog.text


def test_training_and_evaluation_log_their_progress(tiny, log_every_step):
    """Not a terminal (pytest captures stderr): the trainer's loops log lines instead of drawing bars."""
    run_recbole_genrec("SASRec", "tiny-beauty", saved=False, config_dict=tiny(show_progress=True, state="INFO"))
    assert "Train     0: " in log_every_step.text and "Evaluate: " in log_every_step.text


def test_tokenizer_epochs_log_their_progress(log_every_step):
    vectors = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    build_tokenizer("RQVAE", {"num_levels": 2, "codebook_size": 8, "latent_dim": 4, "hidden_dims": [16], "epochs": 3,
                              "collision": "none"}).fit(vectors)
    assert "RQ-VAE epochs: 3/3 (100%)" in log_every_step.text and "loss=" in log_every_step.text
