"""The LIGER module-swap adapter (benchmarks/official_modules/liger.py) on the tiny fixture.

Needs a checkout of facebookresearch/liger (OFFICIAL_LIGER_DIR) and the transformers it pins (4.x): skipped
otherwise (CI has neither)."""
import os
import sys

import pytest
import torch

from conftest import ROOT, TINY_TIGER

CHECKOUT = os.environ.get("OFFICIAL_LIGER_DIR")
pytestmark = [
    pytest.mark.skipif(not CHECKOUT, reason="OFFICIAL_LIGER_DIR (a facebookresearch/liger checkout) is not set"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def swapped(tiny):
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) != 4:
        pytest.skip(f"the official code pins transformers 4.39.3, this environment has {transformers.__version__}")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from official_modules import liger as adapter
    from recbole_genrec import registry
    from recbole_genrec.quick_start import prepare_run

    cls = adapter.swapped_class(CHECKOUT)
    get_model = registry.get_model
    registry.get_model = lambda name: cls if name == "LIGER" else get_model(name)
    try:
        overrides = {**TINY_TIGER, "tokenizer": "RQKMeans", "text_mlp_hidden": [16], "beam_size": 20,
                     "tokenizer_params": {"num_levels": 3, "codebook_size": 8, "niter": 5, "collision": "append_digit"}}
        _, _, model, train_data, _, test_data = prepare_run("LIGER", "tiny-beauty", None, tiny(**overrides))
    finally:
        registry.get_model = get_model
    return model, next(iter(train_data)), next(iter(test_data))[0]


def test_official_layout_round_trips_to_our_items(swapped):
    model, _, _ = swapped
    items = torch.arange(1, model.item_codes.shape[0])
    found, _ = model.sids_to_items(model.official_item_sids[items][:, None, :], 1)
    assert torch.equal(found[:, 0], items)
    assert model.official.shared.num_embeddings == model.official.config.vocab_size
    assert int(model.official_item_sids.max()) < model.official.config.vocab_size - 1  # below EOS


def test_loss_trains_the_official_module(swapped):
    model, batch, _ = swapped
    model.train()
    loss = model.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.official.emb_proj.out_projection.weight.grad.abs().sum() > 0
    model.zero_grad()


@pytest.mark.parametrize("inference", ["dense", "generative", "hybrid"])
def test_rankings_read_the_history_only(swapped, inference):
    model, _, interaction = swapped
    model.eval()
    items, _ = model.ranked_topk(interaction, 10, inference)
    assert items.shape == (len(interaction), 10)
    assert ((items == -1) | ((items >= 1) & (items < model.item_codes.shape[0]))).all()
    for row in items:
        kept = row[row >= 0]
        assert len(kept) == len(set(kept.tolist()))  # no item twice
    if inference != "generative":  # an untrained unconstrained beam may name no item; the dense part always does
        assert (items >= 0).any()
    from recbole.data.interaction import Interaction

    other = Interaction({key: value.clone() for key, value in interaction.interaction.items()})
    other[model.POS_ITEM_ID] = torch.ones_like(interaction[model.POS_ITEM_ID])  # another target
    again, _ = model.ranked_topk(other, 10, inference)
    assert torch.equal(items, again)
