"""Generation never reads the target item: zeroing it (and every non-history field) leaves the top-K unchanged."""
import torch
from recbole.data.interaction import Interaction

from recbole_genrec.quick_start import _prepare

from conftest import TINY_TIGER


def test_tiger_topk_ignores_target_item_and_its_features(tiny):
    config, _, model, train_data, _, test_data = _prepare("TIGER", "tiny-beauty", None, tiny(**TINY_TIGER))
    # A few optimisation steps so the model is not at its initial, input-insensitive state.
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for batch in train_data:
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        optimizer.step()
    model.eval()
    interaction, _, _, positive_i = next(iter(test_data))
    target_field = config["ITEM_ID_FIELD"]
    assert torch.equal(interaction[target_field], positive_i)  # the batch really carries the target
    with torch.no_grad():
        items, scores = model.generate_topk(interaction, 10)
        history_fields = {model.ITEM_SEQ, model.ITEM_SEQ_LEN, model.USER_ID}
        blinded = Interaction({
            field: value.clone() if field in history_fields else torch.zeros_like(value)
            for field, value in interaction.interaction.items()
        })
        blinded_items, blinded_scores = model.generate_topk(blinded, 10)
    assert torch.equal(items, blinded_items)
    assert torch.allclose(scores, blinded_scores)
    # The history does matter: different histories give different rankings.
    assert not torch.equal(items[0], items[1]) or not torch.equal(items[1], items[2])
