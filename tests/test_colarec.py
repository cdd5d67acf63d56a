"""ColaRec: LightGCN GIDs on a k-means tree, item-ID + content encoder inputs, generation + BPR + contrastive."""
import pytest
import torch

from recbole_genrec.quick_start import _prepare

from conftest import TINY_TIGER, check_run_and_reload, trained_model

# 287 items, 8 branches: 3 levels
TINY_COLAREC = {
    **{key: TINY_TIGER[key] for key in ("d_model", "num_heads", "d_kv", "d_ff", "train_batch_size", "learning_rate")},
    "cf_params": {"model": "LightGCN", "embedding_size": 8, "epochs": 2},
    "tokenizer_params": {"branches": 8, "niter": 10, "cluster_size_max": "subtree"},
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


def test_encoder_input_is_task_then_id_and_content_per_item_then_eos(colarec):
    model, _ = colarec  # the random-init path: one content token (the projected text embedding) per item
    items = torch.tensor([[5, 9, 0], [7, 0, 0], [0, 0, 0]])
    slot_items, slot_parts, mask, eos = model.encoder_layout(items)
    assert slot_items.tolist()[0] == [0, 5, 5, 9, 9, 0] and slot_parts.tolist()[0] == [-1, 0, 1, 0, 1, -1]
    assert eos.tolist() == [5, 3, 1] and mask.tolist()[2] == [True, True] + [False] * 4
    with torch.no_grad():
        memory, mask, state = model.encode_items(items, task=0)
    assert torch.equal(state, memory[torch.arange(3), eos])  # the representation: the encoder state at EOS
    model.max_encoder_tokens = 4  # the whole input is cut before the EOS, as the official tokenizer
    slot_items, _, mask, eos = model.encoder_layout(items)
    model.max_encoder_tokens = 256
    assert slot_items.tolist()[0] == [0, 5, 5, 0] and eos.tolist() == [3, 3, 1]


def test_per_level_code_embeddings_and_heads_and_a_normalised_beam_step(colarec):
    model, interaction = colarec
    assert [head.out_features for head in model.code_heads] == [9, 9, 9]  # 8 codes + the unused class (official 33)
    assert [table.num_embeddings for table in model.code_embeddings] == [9, 9, 9]
    with torch.no_grad():
        memory, mask, _ = model.encode_items(model.user_items(interaction), 0)
        state = model.backbone.start_decoding(memory, mask)
        tokens = torch.zeros(len(memory), dtype=torch.long)
        for level in range(3):
            scores, state = model.decoding_step(tokens, state)
            finite = torch.isfinite(scores)
            allowed = torch.zeros(model.vocab.size, dtype=torch.bool)
            allowed[[model.vocab.pad_id, *model.vocab.level_range(level)]] = True
            assert torch.all(finite == allowed) and torch.allclose(scores.logsumexp(-1), torch.zeros(len(scores)), atol=1e-5)
            tokens = model.vocab.level_start(level) + scores[:, model.vocab.level_range(level)].argmax(-1)


def test_negatives_avoid_the_users_training_history_and_the_positives_leaf(colarec):
    model, _ = colarec
    history = {(int(u), int(i)) for u, i in zip(model.history_keys // model.n_items, model.history_keys % model.n_items)}
    users = torch.tensor(sorted({u for u, _ in history}) * 20)
    positives = torch.tensor([min(i for u2, i in history if u2 == u) for u in users.tolist()])
    negatives = model.sample_negatives(users, positives)
    assert not any((u, i) in history for u, i in zip(users.tolist(), negatives.tolist()))
    assert not (model.item_codes[negatives, :-1] == model.item_codes[positives, :-1]).all(1).any()
    assert negatives.min() >= 1 and len(set(negatives.tolist())) > 20  # still spread over the catalogue


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
    for parameter in (model.item_id_embedding.weight, model.content_projection.weight, model.backbone.embedding.weight,
                      model.task_embedding.weight, *model.code_heads.parameters(), *model.code_embeddings.parameters()):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_colarec_end_to_end_and_checkpoint_reload(tiny):
    check_run_and_reload("ColaRec", "tiny-beauty", tiny(**TINY_COLAREC))


def test_colarec_needs_the_tree_tokenizer(tiny):
    with pytest.raises(ValueError, match="tokenizer` must be HKMeans"):
        _prepare("ColaRec", "tiny-beauty", None, tiny(**{**TINY_COLAREC, "tokenizer": "RQKMeans",
                                                         "tokenizer_params": {"num_levels": 2, "codebook_size": 8}}))
