"""ColaRec: LightGCN GIDs on a k-means tree, item-ID + content encoder inputs, generation + BPR + contrastive."""
import pytest
import torch

from recbole_genrec.quick_start import _prepare

from conftest import TINY_TIGER, check_run_and_reload, trained_model

# 287 items, 8 branches: 3 levels
TINY_COLAREC = {
    **{key: TINY_TIGER[key] for key in ("d_model", "num_heads", "d_kv", "d_ff", "train_batch_size", "learning_rate")},
    "cf_params": {"model": "LightGCN", "embedding_size": 8, "epochs": 2},
    "tokenizer_params": {"branches": 8, "niter": 10},
    "num_encoder_layers": 1, "num_decoder_layers": 1, "beam_size": 20, "sample_item_num": 4,
}


@pytest.fixture(scope="module")
def colarec(tiny):
    return trained_model(tiny, "ColaRec", TINY_COLAREC)


def test_gids_are_unique_tree_paths_and_leaf_groups_share_their_prefix(colarec):
    model, _ = colarec
    codes = model.item_codes[1:]
    assert model.vocab_sizes == [8, 8, 8] and len(torch.unique(codes, dim=0)) == len(codes)
    for item in range(1, model.n_items):
        start, size = model.leaf_start[item], model.leaf_size[item]
        group = model.leaf_order[start:start + size]
        assert item in group.tolist()
        assert torch.all(model.item_codes[group, :-1] == model.item_codes[item, :-1])


def test_user_side_samples_in_training_and_reads_newest_first_in_evaluation(colarec):
    model, interaction = colarec
    history, lengths = model.history(interaction)
    model.eval()
    newest = model.user_items(interaction)
    for row in range(len(history)):
        n = int(lengths[row])
        assert newest[row, :n].tolist() == history[row, :n].flip(0).tolist() and not newest[row, n:].any()
    model.train()
    sampled = model.user_items(interaction)
    model.eval()
    assert sampled.shape[1] == 4
    for row in range(len(history)):
        n = int(lengths[row])
        chosen = [item for item in sampled[row].tolist() if item]
        assert len(chosen) == min(n, 4) and set(chosen) <= set(history[row, :n].tolist())
        assert not any(sampled[row, len(chosen):])  # real items first


def test_representation_is_the_state_at_the_last_separator(colarec):
    model, _ = colarec
    items = torch.tensor([[5, 9, 0], [7, 0, 0], [0, 0, 0]])
    with torch.no_grad():
        memory, mask, state = model.encode_items(items, task=0)
    assert mask.tolist()[0] == [True] * 7 + [False] * 3 and mask.tolist()[2] == [True] + [False] * 9
    assert torch.equal(state, memory[torch.arange(3), torch.tensor([6, 3, 0])])


def test_generation_drops_history_items_and_returns_distinct_items(colarec):
    model, interaction = colarec
    with torch.no_grad():
        items, scores = model.generate_topk(interaction, 10)
    history, _ = model.history(interaction)
    assert items.shape == (len(interaction), 10) and torch.all(items >= 1)
    assert not (items.unsqueeze(2) == history.unsqueeze(1)).any()
    assert all(len(set(row.tolist())) == 10 for row in items) and torch.all(scores[:, :-1] >= scores[:, 1:])


def test_loss_has_gradients_for_ids_content_and_backbone(tiny):
    _, _, model, train_data, _, _ = _prepare("ColaRec", "tiny-beauty", None, tiny(**TINY_COLAREC))
    model.train()
    loss = model.calculate_loss(next(iter(train_data)))
    loss.backward()
    assert torch.isfinite(loss)
    for parameter in (model.item_id_embedding.weight, model.content_projection.weight, model.backbone.embedding.weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_colarec_end_to_end_and_checkpoint_reload(tiny):
    check_run_and_reload("ColaRec", "tiny-beauty", tiny(**TINY_COLAREC))


def test_colarec_needs_the_tree_tokenizer(tiny):
    with pytest.raises(ValueError, match="tokenizer` must be HKMeans"):
        _prepare("ColaRec", "tiny-beauty", None, tiny(**{**TINY_COLAREC, "tokenizer": "RQKMeans",
                                                         "tokenizer_params": {"num_levels": 2, "codebook_size": 8}}))
