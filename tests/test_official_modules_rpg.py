"""benchmarks/official_modules/rpg.py: our RPG with the official module (facebookresearch/RPG_KDD2025) on the tiny
fixture.

Needs the official checkout (OFFICIAL_RPG_DIR=/path/to/RPG_KDD2025) and the transformers 4.x it was written for;
skipped otherwise, as in CI."""
import os
import sys

import pytest
import torch

from conftest import ROOT, check_run_and_reload, overfit_one_batch, trained_model

CHECKOUT = os.environ.get("OFFICIAL_RPG_DIR")
pytestmark = [
    pytest.mark.skipif(not CHECKOUT, reason="OFFICIAL_RPG_DIR (a checkout of facebookresearch/RPG_KDD2025) is not set"),
    pytest.mark.usefixtures("one_torch_thread"),
]

SWAP = {"d_model": 32, "num_heads": 2, "d_ff": 64, "num_layers": 1,
        "tokenizer_params": {"num_digits": 8, "codebook_size": 16, "collision": "none", "opq_niter": 10},
        "warmup_steps": 10, "learning_rate": 0.003, "num_beams": 10, "num_edges": 20, "propagation_steps": 2}


@pytest.fixture(scope="module")
def swapped():
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) != 4:
        pytest.skip(f"the official code was written for transformers 4.x, found {transformers.__version__}")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from official_modules import rpg as adapter

    from recbole_genrec import registry

    cls, get_model = adapter.swapped_class(CHECKOUT), registry.get_model
    registry.get_model = lambda name: cls if name == "RPG" else get_model(name)
    yield cls
    registry.get_model = get_model


@pytest.fixture(scope="module")
def built(swapped, tiny):
    from recbole_genrec.quick_start import prepare_run

    _, _, model, train_data, _, _ = prepare_run("RPG", "tiny-beauty", None, tiny(**SWAP))
    return model, next(iter(train_data))


def test_the_swapped_class_is_our_rpg_registered_for_checkpoints(swapped):
    from recbole_genrec.model import rpg as rpg_module

    assert issubclass(swapped, rpg_module.RPG) and swapped.__module__ == rpg_module.__name__
    assert getattr(rpg_module, swapped.__name__) is swapped


def test_official_network_tokens_and_layout(built):
    model, batch = built
    official = model.official
    assert type(official).__module__ == "genrec.models.RPG.model"
    m, k = model.n_digits, model.codebook_size
    assert official.gpt2.wte.num_embeddings == m * k + 2  # padding 0, the codes, EOS
    assert official.gpt2.config.activation_function == "gelu_new"
    assert official.gpt2.config.layer_norm_epsilon == 1e-12
    assert all(head.linear.weight.abs().sum() == 0 for head in official.pred_heads)  # official ResBlock init
    tokens = official.item_id2tokens
    assert torch.equal(tokens[1:] - 1 - torch.arange(m) * k, model.item_codes[1:]) and (tokens[0] == 0).all()
    assert not any(name.startswith(("digit_embedding", "backbone", "heads")) for name in model.state_dict())
    model.check_layout(batch)  # the official tokenizer's rows for the same sequences


def test_the_official_loss_trains(built):
    model, batch = built
    losses = overfit_one_batch(model, batch)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert model.official.pred_heads[0].linear.weight.abs().sum() > 0


@pytest.mark.parametrize("inference", ["exact", "graph"])
def test_rankings_are_real_items_from_the_history_only(swapped, tiny, inference):
    model, interaction = trained_model(tiny, "RPG", {**SWAP, "rpg_inference": inference})
    torch.manual_seed(0)  # graph_propagation draws its start items from torch's global generator
    items, scores = model.generate_topk(interaction, 10)
    assert items.shape == scores.shape == (len(interaction), 10)
    assert ((items >= 1) & (items < model.n_items)).all()
    assert all(len(set(row.tolist())) == 10 for row in items)
    if inference == "graph":
        assert model.official.init_flag and model.official.adjacency.shape == (model.n_items, SWAP["num_edges"])
    from recbole.data.interaction import Interaction

    other = Interaction({key: value.clone() for key, value in interaction.interaction.items()})
    other[model.POS_ITEM_ID] = torch.roll(interaction[model.POS_ITEM_ID], 1)  # another target
    torch.manual_seed(0)
    assert torch.equal(model.generate_topk(other, 10)[0], items)
    assert torch.equal(model.selection_topk(interaction, 10)[0], model.selection_topk(other, 10)[0])


def test_a_run_trains_evaluates_and_reloads(swapped, tiny):
    check_run_and_reload("RPG", "tiny-beauty", tiny(**SWAP, rpg_inference="exact"))
