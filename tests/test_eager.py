"""EAGER: two ID trees side by side, one encoder and two decoders, union of two beams re-scored by both streams."""
import pytest
import torch

from recbole_genrec.quick_start import _prepare
from recbole_genrec.tokenization import SemanticIds, tree_path_codes

from conftest import TINY_TIGER, check_run_and_reload, trained_model

# 287 items, 8 branches: 3 levels (8^2 < 287 <= 8^3), path vocabularies 8, 64, 512
TINY_EAGER = {
    **{key: TINY_TIGER[key] for key in ("d_model", "num_heads", "d_kv", "d_ff", "warmup_steps", "train_batch_size",
                                        "learning_rate")},
    "cf_params": {"hidden_size": 8, "inner_size": 16, "n_layers": 1, "epochs": 2},
    "tokenizer_params": {"branches": 8, "niter": 10, "collision": "none"},
    "num_encoder_layers": 1, "num_decoder_layers": 1, "beam_size": 10,
}


def test_tree_path_codes_name_nodes_and_concat_keeps_both_parts():
    leaves = SemanticIds(codes=torch.tensor([[0, 0], [1, 2], [1, 3], [2, 2]]), vocab_sizes=[4, 4], quality={"q": 1})
    paths = tree_path_codes(leaves, branches=4)
    assert paths.codes.tolist() == [[0, 0], [1, 6], [1, 7], [2, 10]] and paths.vocab_sizes == [4, 16]
    both = SemanticIds.concat({"behaviour": paths, "semantic": leaves})
    assert both.codes.shape == (4, 4) and both.vocab_sizes == [4, 16, 4, 4]
    assert both.quality["parts"]["behaviour"] == {"q": 1, "levels": 2} and both.quality["n_items"] == 3


@pytest.fixture(scope="module")
def eager(tiny):
    return trained_model(tiny, "EAGER", TINY_EAGER)


def test_two_trees_give_every_item_unique_ids_in_both_streams(eager):
    model, _ = eager
    parts = model.semantic_ids.quality["parts"]
    assert [parts[stream]["levels"] for stream in ("behaviour", "semantic")] == [3, 3]
    assert model.vocab_sizes == [8, 64, 512] * 2
    for stream, columns in (("behaviour", slice(0, 3)), ("semantic", slice(3, 6))):
        codes = model.item_codes[1:, columns]
        assert len(torch.unique(codes, dim=0)) == model.n_items - 1, stream
    assert not torch.equal(model.item_codes[1:, :3], model.item_codes[1:, 3:])  # two different trees


def test_code_log_likelihood_equals_teacher_forced_scoring(eager):
    model, interaction = eager
    candidates = torch.tensor([[5, 17, -1], [3, 3, 200]]).repeat(2, 1)  # -1 (no item) is scored as item 0
    interaction = interaction[torch.arange(4)]
    with torch.no_grad():
        _, mask, memory = model.encode(interaction)
        for stream in ("behaviour", "semantic"):
            fast = model.code_log_likelihood(stream, memory, mask, candidates)
            decoder, tokens = model.decoders[stream], model.stream_tokens(stream)[candidates.clamp(min=0)]
            for user in range(4):
                for c in range(3):
                    target = tokens[user, c].unsqueeze(0)
                    inputs = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1]], dim=1)
                    logits = decoder.lm_logits(decoder.decode(inputs, memory[user:user + 1], mask[user:user + 1]))
                    slow = logits.float().log_softmax(-1).gather(-1, target.unsqueeze(-1)).sum()
                    assert fast[user, c].item() == pytest.approx(slow.item(), abs=1e-4)


def test_union_of_full_beams_is_the_exhaustive_ranking_by_both_streams(eager):
    """With each beam as wide as the catalogue, the union holds every item: the top-K must be the exhaustive
    ranking of all items by the summed log-likelihoods of their two codes."""
    model, interaction = eager
    interaction = interaction[torch.arange(3)]
    model.beam_size = model.n_items - 1
    try:
        with torch.no_grad():
            items, scores = model.generate_topk(interaction, 10)
            _, mask, memory = model.encode(interaction)
            everything = torch.arange(1, model.n_items).repeat(3, 1)
            exhaustive = sum(model.code_log_likelihood(s, memory, mask, everything) for s in ("behaviour", "semantic"))
    finally:
        model.beam_size = TINY_EAGER["beam_size"]
    best_scores, best = exhaustive.topk(10, dim=1)
    assert torch.equal(items, best + 1) and torch.allclose(scores, best_scores, atol=1e-4)


def test_generate_topk_returns_distinct_valid_items(eager):
    model, interaction = eager
    with torch.no_grad():
        items, scores = model.generate_topk(interaction, 10)
    assert items.shape == (len(interaction), 10) and torch.all(items >= 1) and torch.all(items < model.n_items)
    assert all(len(set(row.tolist())) == 10 for row in items)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


def test_contrastive_task_adds_a_finite_loss_with_gradients(tiny):
    _, _, model, train_data, _, _ = _prepare("EAGER", "tiny-beauty", None, tiny(**TINY_EAGER, gct_weights=[1.0, 10.0]))
    batch = next(iter(train_data))
    loss = model.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.gct_projection["semantic"].weight.grad.abs().sum() > 0
    assert model.semantic_vectors.shape[1] == 384 and model.behaviour_vectors.shape[1] == 8


def test_transfer_task_reconstructs_within_siblings_with_gradients(tiny):
    _, _, model, train_data, _, _ = _prepare("EAGER", "tiny-beauty", None, tiny(**TINY_EAGER, stt_weight=1.0))
    batch = next(iter(train_data))
    loss = model.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    transfer_grads = [p.grad for p in model.transfer.parameters() if p.grad is not None]
    assert transfer_grads and all(torch.isfinite(g).all() for g in transfer_grads)
    assert model.guide_projection.weight.grad.abs().sum() > 0 and model.estimation_head.weight.grad.abs().sum() > 0
    # the loss is reconstruction (CE over 8 siblings) + recognition (BCE): about ln 8 + ln 2 untrained
    with torch.no_grad():
        untrained = model.transfer_loss(batch["item_id"], torch.zeros(len(batch), model.item_embedding.embedding_dim))
    assert 0.5 < untrained.item() < 10


def test_eager_end_to_end_and_checkpoint_reload(tiny):
    check_run_and_reload("EAGER", "tiny-beauty", tiny(**TINY_EAGER))


def test_eager_refuses_trees_whose_node_vocabulary_is_not_a_clean_tree_or_too_large(tiny, monkeypatch):
    import recbole_genrec.model.eager as eager_module

    with pytest.raises(ValueError, match=r"levels of sizes \[8, 8, 8, 1\].*collision: none"):
        _prepare("EAGER", "tiny-beauty", None,
                 tiny(**{**TINY_EAGER, "tokenizer_params": {**TINY_EAGER["tokenizer_params"], "collision": "append_digit"}}))
    monkeypatch.setattr(eager_module, "MAX_NODE_VOCABULARY", 100)  # 287 items, 8 branches: 8^3 = 512 last-level nodes
    with pytest.raises(ValueError, match=r"287 items need 3 levels of 8 branches.*branches >= 17"):
        _prepare("EAGER", "tiny-beauty", None, tiny(**TINY_EAGER))


def test_eager_needs_the_tree_tokenizer(tiny):
    with pytest.raises(ValueError, match="tokenizer` must be HKMeans"):
        _prepare("EAGER", "tiny-beauty", None, tiny(**{**TINY_EAGER, "tokenizer": "RQKMeans",
                                                       "tokenizer_params": {"num_levels": 2, "codebook_size": 8}}))
