import json
import os
import shutil

import pytest
import torch

import recbole_genrec  # noqa: F401  (applies the compatibility shims first)
from recbole_genrec.quick_start import prepare_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
torch.set_num_threads(2)

# A TIGER small enough for CI: same architecture family, tiny widths, a short tokenizer fit.
TINY_TIGER = {
    "d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1,
    "tokenizer_params": {"num_levels": 3, "codebook_size": 8, "latent_dim": 8, "hidden_dims": [64, 32],
                         "epochs": 300, "batch_size": 512, "lr": 0.003, "collision": "append_digit"},
    "beam_size": 10, "warmup_steps": 10, "train_batch_size": 256, "learning_rate": 0.003,
    # 287 items on 8-code levels collide far more than paper-size codebooks; the tests check the pipeline, and
    # tests/test_tokenization.py checks that a collapse stops a run by default
    "sid_collapse": "warn",
}
# LETTER and LIGER on the same tiny widths (tests/test_letter.py, tests/test_liger.py, tests/test_leakage.py).
TINY_LETTER = {
    **TINY_TIGER,
    "cf_params": {"hidden_size": 8, "inner_size": 16, "n_layers": 1, "epochs": 2},
    "tokenizer_params": {"num_levels": 3, "codebook_size": 8, "latent_dim": 8, "hidden_dims": [64, 32], "epochs": 30,
                         "batch_size": 128, "n_clusters": 3, "collision": "reassign_last_level"},
}
TINY_LIGER = {**TINY_TIGER, "num_encoder_layers": 1, "num_decoder_layers": 1}
# MQL4GRec on the tiny published-code domains (tiny_mm below; tests/test_mql4grec.py, tests/test_published_codes.py).
TINY_MQL = {
    "d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1,
    "beam_size": 10, "warmup_steps": 10, "train_batch_size": 256, "learning_rate": 0.003, "code_num": 8,
}


def write_domain(folder, name, seed):
    """tiny-beauty's interactions as domain `name`, with synthetic published codes (4 x 8 per modality): text codes
    with one collision, image codes unique (as the published amazon-instruments-mm files)."""
    folder.mkdir(parents=True)
    shutil.copy(os.path.join(FIXTURES, "tiny-beauty", "tiny-beauty.inter"), folder / f"{name}.inter")
    items = sorted({line.split("\t")[1] for line in open(folder / f"{name}.inter").read().splitlines()[1:]})
    generator = torch.Generator().manual_seed(seed)
    for modality, letters in (("text", "abcd"), ("image", "ABCD")):
        codes = torch.stack([torch.randperm(8 ** 3, generator=generator)[:len(items)] // 64,
                             torch.randperm(8 ** 3, generator=generator)[:len(items)] // 8 % 8,
                             torch.arange(len(items)) % 8, torch.arange(len(items)) // 8 % 8], dim=1)
        if modality == "text":
            codes[1] = codes[0]  # one published collision
        mapping = {item: [f"<{letters[l]}_{int(c)}>" for l, c in enumerate(row)] for item, row in zip(items, codes)}
        (folder / f"{name}.{modality}-codes.json").write_text(json.dumps(mapping))


@pytest.fixture(scope="session")
def tiny_mm(workdir):
    """tiny-mm (the fine-tuning target) and tiny-pre (a pre-training domain: same interactions, other codes) side
    by side, and tiny-beauty without code files."""
    root = workdir / "mm-data"
    write_domain(root / "tiny-mm", "tiny-mm", seed=0)
    write_domain(root / "tiny-pre", "tiny-pre", seed=1)
    shutil.copytree(os.path.join(FIXTURES, "tiny-beauty"), root / "tiny-beauty")
    return {"data_path": str(root), "dataset": "tiny-mm", **TINY_MQL}


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of tiny networks: one thread runs them faster (no OpenMP barriers, which stall on a busy
    machine). Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("genrec")


@pytest.fixture(scope="session")
def tiny(workdir):
    """Config for the tiny-beauty fixture: one epoch, shared cache (so later tests hit it), own checkpoints."""

    def make(**overrides):
        config = {
            "data_path": FIXTURES, "dataset": "tiny-beauty", "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "text_fields": ["title", "brand", "categories", "price"], "epochs": 1, "eval_step": 1,
            "checkpoint_dir": str(workdir / "saved"), "cache_dir": str(workdir / "cache"), "seed": 2020,
            "state": "WARNING", "MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 32, "inner_size": 64,
            "gpu_id": "",  # CPU everywhere, also on a GPU host: the tests compare with CPU tensors, bit for bit
        }
        config.update(overrides)
        return config

    return make


def overfit_one_batch(model, batch, steps=8):
    """Losses of `steps` optimiser steps on one training batch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def trained_model(tiny, model_name, overrides, dataset="tiny-beauty"):
    """The model after one short epoch, so it is not at its input-insensitive initial state; and a test batch."""
    config, _, model, train_data, _, test_data = prepare_run(model_name, dataset, None, tiny(**overrides))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for batch in train_data:
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    model.eval()
    interaction, _, _, positive_i = next(iter(test_data))
    assert torch.equal(interaction[config["ITEM_ID_FIELD"]], positive_i)  # the batch really carries the target
    return model, interaction


def check_run_and_reload(model_name, dataset, config_dict):
    """A whole run gives RecBole's four metrics in [0, 1], and its checkpoint, reloaded, scores the same."""
    from recbole_genrec.quick_start import load_data_and_model, run_recbole_genrec
    from recbole_genrec.trainer import GenRecTrainer

    result = run_recbole_genrec(model_name, dataset, config_dict=config_dict)
    metrics = result["test_result"]
    assert set(metrics) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"} and all(0 <= v <= 1 for v in metrics.values())
    config, model, _, _, _, test_data = load_data_and_model(result["checkpoint"])
    assert GenRecTrainer(config, model).evaluate(test_data, load_best_model=False) == metrics
    return result
