"""Generation never reads the target item: RecBole's evaluation batches carry the target id (and would carry its
features); blanking every non-history field must leave each model's ranking unchanged."""
import pytest
import torch
from recbole.data.interaction import Interaction

from conftest import TINY_LETTER, TINY_LIGER, TINY_TIGER, trained_model
from test_colarec import TINY_COLAREC
from test_eager import TINY_EAGER
from test_rpg import TINY_RPG


def _blinded(model, interaction):
    history_fields = {model.ITEM_SEQ, model.ITEM_SEQ_LEN, model.USER_ID}
    return Interaction({
        field: value.clone() if field in history_fields else torch.zeros_like(value)
        for field, value in interaction.interaction.items()
    })


@pytest.mark.parametrize("model_name, overrides", [
    ("TIGER", TINY_TIGER),
    ("RPG", {**TINY_RPG, "rpg_inference": "graph"}),
    ("LETTER", TINY_LETTER),
    ("LIGER", TINY_LIGER),
    ("LIGER", {**TINY_LIGER, "liger_inference": "dense"}),
    # from BERT's std-0.02 start, one epoch in a few batches of 256 left the first users' top 10 identical: 4x the steps
    ("EAGER", {**TINY_EAGER, "train_batch_size": 64}),
    ("ColaRec", TINY_COLAREC),
])
def test_topk_ignores_target_item_and_its_features(tiny, model_name, overrides):
    model, interaction = trained_model(tiny, model_name, overrides)
    blinded = _blinded(model, interaction)
    with torch.no_grad():
        items, scores = model.generate_topk(interaction, 10)
        blinded_items, blinded_scores = model.generate_topk(blinded, 10)
    assert torch.equal(items, blinded_items) and torch.allclose(scores, blinded_scores)
    assert not torch.equal(items[0], items[1]) or not torch.equal(items[1], items[2])  # the history matters


def test_rpg_exact_scores_ignore_target_item(tiny):
    model, interaction = trained_model(tiny, "RPG", TINY_RPG)
    with torch.no_grad():
        scores, blinded_scores = model.full_sort_predict(interaction), model.full_sort_predict(_blinded(model, interaction))
    assert torch.equal(scores, blinded_scores)
    assert not torch.equal(scores[0], scores[1])
