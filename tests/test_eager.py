"""EAGER: two ID trees side by side, one encoder over each stream's own ID rows and two decoders with
tree-structured softmaxes (first-level nodes, then the parent's children), union of two beams re-scored by both
streams; the layers are the official network's (HF BERT encoder and decoders)."""
import copy
import os

import pytest
import torch
import torch.nn.functional as F
import yaml

from recbole_genrec.inference import PrefixConstraints, beam_search, mask_duplicates, top_candidates
from recbole_genrec.quick_start import prepare_run
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


STREAM_COLUMNS = {"behaviour": slice(0, 3), "semantic": slice(3, 6)}


def _children(model, stream, items, level):
    """Independently of the model's helpers: the tokens of the children of each item's level-(level - 1) node
    [len(items), 8] (the first level's nodes at level 0), from the path codes parent * 8 + slot."""
    vocab, paths = model.vocab[stream], model.item_codes[items][:, STREAM_COLUMNS[stream]]
    parent = paths[:, level - 1] if level else torch.zeros_like(items)
    return vocab.level_start(level) + parent.unsqueeze(1) * 8 + torch.arange(8)


def test_defaults_are_the_papers_recipe():
    """Both auxiliary tasks on (the official code's weights), beam 100 of the 128 first-level nodes."""
    with open(os.path.join(os.path.dirname(__file__), "..", "properties", "model", "EAGER.yaml")) as file:
        defaults = yaml.safe_load(file)
    assert defaults["gct_weights"] == [1.0, 10.0] and defaults["stt_weight"] == 1.0
    assert defaults["beam_size"] == 100 and defaults["tokenizer_params"]["branches"] == 128
    assert defaults["backbone"] == "bert"  # HF_Model.py's EncoderDecoderModel of two BertConfigs


def _official_network(encoder, decoder):
    """Hugging Face's EncoderDecoderModel as HF_Model.py builds it (two BertConfigs, absolute positions, the decoder
    with cross-attention), holding the weights of our `encoder` stack and `decoder` stack (BERT's token-type
    embedding, which ours has not, zeroed). Every parameter of both of ours is mapped, none twice."""
    from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

    def bert_config(model, layers, **extra):
        return BertConfig(vocab_size=model.vocab_size, hidden_size=model.d_model, num_hidden_layers=layers,
                          num_attention_heads=model.num_heads,
                          intermediate_size=model.decoder_layers[0].ffn.inner.out_features,
                          position_embedding_type="absolute",
                          max_position_embeddings=model.decoder_positions.num_embeddings, **extra)

    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        bert_config(encoder, len(encoder.encoder_layers)),
        bert_config(decoder, len(decoder.decoder_layers), is_decoder=True, add_cross_attention=True))
    official = EncoderDecoderModel(config=config).eval()
    target = official.state_dict()

    def layer_names(ours, theirs, blocks):
        names = {}
        for mine, hf in blocks:
            for w in ("weight", "bias"):
                for a in ("query", "key", "value"):
                    names[f"{ours}.{mine}.{a}.{w}"] = f"{theirs}.{hf}.self.{a}.{w}"
                names[f"{ours}.{mine}.output.{w}"] = f"{theirs}.{hf}.output.dense.{w}"
                names[f"{ours}.{mine}_norm.{w}"] = f"{theirs}.{hf}.output.LayerNorm.{w}"
        for w in ("weight", "bias"):
            names[f"{ours}.ffn.inner.{w}"] = f"{theirs}.intermediate.dense.{w}"
            names[f"{ours}.ffn.outer.{w}"] = f"{theirs}.output.dense.{w}"
            names[f"{ours}.ffn_norm.{w}"] = f"{theirs}.output.LayerNorm.{w}"
        return names

    decoder_blocks = [("self_attention", "attention"), ("cross_attention", "crossattention")]
    for model, stack, prefix, blocks in ((encoder, "encoder", "encoder.", [("attention", "attention")]),
                                         (decoder, "decoder", "decoder.bert.", decoder_blocks)):
        names = {f"{stack}_positions.weight": f"{prefix}embeddings.position_embeddings.weight",
                 **{f"{stack}_embedding_norm.{w}": f"{prefix}embeddings.LayerNorm.{w}" for w in ("weight", "bias")}}
        for i in range(len(getattr(model, f"{stack}_layers"))):
            names.update(layer_names(f"{stack}_layers.{i}", f"{prefix}encoder.layer.{i}", blocks))
        if stack == "decoder":
            names["embedding.weight"] = "decoder.bert.embeddings.word_embeddings.weight"
        ours = {name: value for name, value in model.state_dict().items() if name.startswith(f"{stack}_")
                or (stack == "decoder" and name == "embedding.weight")}
        assert set(ours) == set(names) and len(set(names.values())) == len(names)
        with torch.no_grad():
            for mine, theirs in names.items():
                target[theirs].copy_(ours[mine])
            target[f"{prefix}embeddings.token_type_embeddings.weight"].zero_()
    official.load_state_dict(target)
    return official


def test_layers_compute_the_official_bert_encoder_decoder(eager):
    """The shared encoder and each stream's decoder compute HF_Model.py's network: Hugging Face's BERT encoder over
    the item-ID rows (inputs_embeds) and BERT decoder over the code tokens, with the same weights; the node logits
    are its `final_hidden @ dec_emb.T`, unscaled; the incremental decoding of the beam search gives the same."""
    pytest.importorskip("transformers")
    model, interaction = eager
    items = interaction[model.POS_ITEM_ID]
    with torch.no_grad():
        history, mask, memories = model.encode(interaction)
        for stream in ("behaviour", "semantic"):
            decoder = model.decoders[stream]
            assert decoder.style == "bert" and decoder.output_scale == 1.0
            official = _official_network(model.encoder, decoder)
            target = model.stream_tokens(stream)[items]
            inputs = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1]], dim=1)
            out = official(inputs_embeds=model.item_embeddings[stream](history), attention_mask=mask.long(),
                           decoder_input_ids=inputs, output_hidden_states=True)
            assert torch.allclose(memories[stream], out.encoder_last_hidden_state, atol=1e-5)
            hidden = decoder.decode(inputs, memories[stream], mask)
            assert torch.allclose(hidden, out.decoder_hidden_states[-1], atol=1e-5)
            choices = model.node_choices(stream, inputs, torch.arange(3))
            official_logits = torch.einsum("bld,blkd->blk", out.decoder_hidden_states[-1], decoder.embedding(choices))
            assert torch.allclose(model.node_logits(stream, hidden, choices), official_logits, atol=1e-5)
            state, steps = decoder.start_decoding(memories[stream], mask), []
            for level in range(3):
                step, state = decoder.decode_step_hidden(inputs[:, level], state)
                steps.append(step)
            assert torch.allclose(torch.stack(steps, 1), hidden, atol=1e-5)


def test_history_is_right_aligned_as_the_official_input(eager):
    """Padding in front, the latest item at the last position for every user (BERT's absolute positions then mean
    the same recency for all); the item-ID rows start at BERT's std 0.02, the padding row zero and masked."""
    model, interaction = eager
    items, lengths = model.history(interaction)
    with torch.no_grad():
        aligned, mask, _ = model.encode(interaction)
    for row in range(len(items)):
        length = int(lengths[row])
        assert aligned[row, -length:].tolist() == items[row, :length].tolist()
        assert (aligned[row, :-length] == 0).all()
        assert mask[row].tolist() == [False] * (items.shape[1] - length) + [True] * length
    assert model.encoder.embedding_init_std == 0.02


def test_the_bert_style_needs_its_position_tables_and_is_no_t5():
    from recbole_genrec.model.layers import EncoderDecoder
    from recbole_genrec.model.layers.hf_t5 import to_hf_t5

    with pytest.raises(ValueError, match="max_positions"):
        EncoderDecoder(10, d_model=8, num_heads=2, d_kv=4, d_ff=16, style="bert")
    with pytest.raises(ValueError, match="max_positions"):
        EncoderDecoder(10, d_model=8, num_heads=2, d_kv=4, d_ff=16, max_positions=5)
    with pytest.raises(ValueError, match="style 'gpt'"):
        EncoderDecoder(10, d_model=8, num_heads=2, d_kv=4, d_ff=16, style="gpt")
    bert = EncoderDecoder(10, d_model=8, num_heads=2, d_kv=4, d_ff=16, style="bert", max_positions=5)
    with pytest.raises(ValueError, match="not a T5 network"):
        to_hf_t5(bert)


def test_code_log_likelihood_equals_teacher_forced_scoring_over_the_parents_children(eager):
    model, interaction = eager
    candidates = torch.tensor([[5, 17, -1], [3, 3, 200]]).repeat(2, 1)  # -1 (no item) is scored as item 1
    interaction = interaction[torch.arange(4)]
    with torch.no_grad():
        _, mask, memories = model.encode(interaction)
        for stream in ("behaviour", "semantic"):
            fast = model.code_log_likelihood(stream, memories[stream], mask, candidates)
            decoder, memory = model.decoders[stream], memories[stream]
            for user in range(4):
                for c in range(3):
                    item = candidates[user, c].clamp(min=1).unsqueeze(0)
                    target = model.stream_tokens(stream)[item]
                    inputs = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1]], dim=1)
                    logits = decoder.lm_logits(decoder.decode(inputs, memory[user:user + 1], mask[user:user + 1]))
                    slow = 0.0
                    for level in range(3):  # log-softmax over the first-level nodes, then the parent's children
                        children = _children(model, stream, item, level)[0]
                        group = logits[0, level, children].float().log_softmax(-1)
                        slow += group[(children == target[0, level]).nonzero().item()]
                    assert fast[user, c].item() == pytest.approx(slow.item(), abs=1e-4)


def test_children_probabilities_of_one_parent_sum_to_one_in_the_decoding_step(eager):
    """The decoding step scores the first level's nodes, then the children of the input node, and only them: its
    log-probabilities [rows, 8] come with those tokens and sum to one, and equal the full output projection's
    logits at those tokens, log-softmaxed among them."""
    model, interaction = eager
    with torch.no_grad():
        _, mask, memories = model.encode(interaction[torch.arange(4)])
        for stream in ("behaviour", "semantic"):
            vocab, step, decoder = model.vocab[stream], model.decoding_step(stream), model.decoders[stream]
            state = decoder.start_decoding(memories[stream], mask)
            parents = torch.tensor([0, 3, 5, 7])  # first-level nodes
            inputs = [torch.zeros(4, dtype=torch.long), vocab.level_start(0) + parents,  # the start token, then
                      vocab.level_start(1) + parents * 8 + 2]  # the second-level node 8 * parent + 2
            expected = [vocab.level_start(0) + torch.arange(8).expand(4, 8),
                        vocab.level_start(1) + parents.unsqueeze(1) * 8 + torch.arange(8),
                        vocab.level_start(2) + (parents.unsqueeze(1) * 8 + 2) * 8 + torch.arange(8)]
            for tokens, children in zip(inputs, expected):
                reference_state = state
                log_probs, choices, state = step(tokens, state)
                assert torch.equal(choices, children)
                assert torch.allclose(log_probs.exp().sum(1), torch.ones(4), atol=1e-5)
                hidden, _ = decoder.decode_step_hidden(tokens, reference_state)
                full = decoder.lm_logits(hidden).float()
                assert torch.allclose(log_probs, full.gather(1, children).log_softmax(-1), atol=1e-5)


def _reference_stream_beam(model, stream, memory, mask, k):
    """The dense decoding EAGER used before, kept as the reference: the step's log-probabilities over the node
    choices scattered into a row of the whole vocabulary (-inf elsewhere), and the shared beam search over
    [beams, level tokens] with the prefix tables [prefixes, level tokens]."""
    decoder, vocab, columns = model.decoders[stream], model.vocab[stream], STREAM_COLUMNS[stream]
    constraints = PrefixConstraints(model.item_codes[:, columns], model.vocab_sizes[columns])

    def step(tokens, state):
        choices = model.node_choices(stream, tokens, state.length)
        hidden, state = decoder.decode_step_hidden(tokens, state)
        log_probs = model.node_logits(stream, hidden, choices).float().log_softmax(-1)
        scores = log_probs.new_full((len(tokens), decoder.vocab_size), float("-inf"))
        return scores.scatter_(1, choices, log_probs), state

    return beam_search(step, decoder.start_decoding(memory, mask), len(memory), vocab.num_levels, vocab,
                       model.beam_size, constraints=constraints, topk=k, state_rows_per_user=1)


def _assert_same_beams(fast, slow, codes, atol=1e-5):
    """The same beams, best first: scores equal to float error, and the items equal at every rank but where the
    reference has two items within `atol` of each other (the reference subtracts a second, float-noisy
    normalisation over the whole vocabulary row, about 0, so it can order such a pair the other way). Every
    beam's codes are its item's, -1 for dead beams."""
    torch.testing.assert_close(fast.scores, slow.scores, atol=atol, rtol=0)
    assert torch.equal(torch.isfinite(fast.scores), fast.items >= 1) and fast.invalid_rate == slow.invalid_rate == 0
    for user, rank in (fast.items != slow.items).nonzero().tolist():
        where = (slow.items[user] == fast.items[user, rank]).nonzero().flatten()
        assert len(where) == 1 and abs(slow.scores[user, where].item() - slow.scores[user, rank].item()) <= atol
    for output in (fast, slow):
        alive = output.items >= 1
        assert torch.equal(output.codes[alive], codes[output.items[alive]]) and (output.codes[~alive] == -1).all()


@pytest.mark.parametrize("beam_size", [10, 30, 286])  # 10 > 8 first-level nodes; 286 = every item
def test_decoding_over_node_choices_ranks_as_the_dense_beam_search(eager, beam_size):
    """Each stream's beam over [users, beams x children] with the sorted node keys gives the dense reference's
    beams (items, codes and scores, best first, dead beams last), and the fused top-K is the reference's union
    re-scored by both streams. (Measured: identical items at beams 10 and 30; at 286 one user's ranks 117 and
    118 of the behaviour stream swap, two items 1 float32 ulp apart.)"""
    model, interaction = eager
    model.beam_size = beam_size
    try:
        with torch.no_grad():
            _, mask, memories = model.encode(interaction)
            candidates = []
            for stream in ("behaviour", "semantic"):
                fast = model.stream_beam(stream, memories[stream], mask, 10)
                slow = _reference_stream_beam(model, stream, memories[stream], mask, 10)
                _assert_same_beams(fast, slow, model.item_codes[:, STREAM_COLUMNS[stream]])
                assert torch.equal(fast.items[:, :10], slow.items[:, :10])
                assert (fast.items >= 1).sum(1).tolist() == [min(beam_size, model.n_items - 1)] * len(mask)
                candidates.append(slow.items[:, :10])
            candidates = torch.cat(candidates, dim=1)
            scores = sum(model.code_log_likelihood(s, memories[s], mask, candidates) for s in STREAM_COLUMNS)
            scores = mask_duplicates(candidates, scores.masked_fill(candidates < 0, float("-inf")))
            expected_items, expected_scores = top_candidates(candidates, scores, 10)
            items, scores = model.generate_topk(interaction, 10)
    finally:
        model.beam_size = TINY_EAGER["beam_size"]
    assert torch.equal(items, expected_items)
    torch.testing.assert_close(scores, expected_scores, atol=0, rtol=0)


def test_the_catalogues_hold_sorted_node_keys_only(eager):
    """No [parents, level tokens] tables: each stream's catalogue holds the sorted keys of the tree's nodes (at most
    one per item and level) and the leaf -> item map."""
    model, _ = eager
    for catalogue in model.catalogues.values():
        assert not catalogue.next_code_tables
        assert sum(buffer.numel() for buffer in catalogue.buffers()) <= 1 + 4 * (model.n_items - 1)


def _code_cross_entropy(model, interaction):
    """calculate_loss with the auxiliary tasks off: the two streams' code cross-entropies."""
    model.gct_weights, model.stt_weight = {"behaviour": 0.0, "semantic": 0.0}, 0.0
    with torch.no_grad():
        return model.calculate_loss(interaction)


def test_code_loss_is_over_the_first_level_then_the_parents_children_only(eager):
    """The training cross-entropy of each level is the full output projection's logits restricted to the level's
    choices (first-level nodes, then the children of the target's parent; HF_Model.py loss1, loss2), and no
    other token's output row changes it."""
    model, interaction = eager
    model = copy.deepcopy(model)  # the fixture's model stays as it is
    items = interaction[model.POS_ITEM_ID]
    loss = _code_cross_entropy(model, interaction)
    with torch.no_grad():
        _, mask, memories = model.encode(interaction)
        expected, involved = 0.0, {}
        for stream in ("behaviour", "semantic"):
            decoder, target = model.decoders[stream], model.stream_tokens(stream)[items]
            inputs = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1]], dim=1)
            logits = decoder.lm_logits(decoder.decode(inputs, memories[stream], mask)).float()
            levels = []
            for level in range(3):
                children = _children(model, stream, items, level)
                slot = (children == target[:, level:level + 1]).float().argmax(1)
                assert torch.equal(children.gather(1, slot.unsqueeze(1)).squeeze(1), target[:, level])
                levels.append(F.cross_entropy(logits[:, level].gather(1, children), slot))
            expected = expected + sum(levels) / 3
            involved[stream] = torch.cat([torch.zeros(1, dtype=torch.long), children.flatten()] +
                                         [_children(model, stream, items, level).flatten() for level in range(2)])
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        for stream, tokens in involved.items():  # every other output row: random
            weight = model.decoders[stream].embedding.weight
            others = torch.ones(len(weight), dtype=torch.bool)
            others[tokens] = False
            weight[others] = torch.randn_like(weight[others]) * 10
        assert _code_cross_entropy(model, interaction).item() == pytest.approx(loss.item(), rel=1e-6)


def test_each_stream_encodes_its_own_item_id_rows(eager):
    model, interaction = eager
    model = copy.deepcopy(model)
    with torch.no_grad():
        _, _, before = model.encode(interaction)
        assert not torch.allclose(before["behaviour"], before["semantic"])
        model.item_embeddings["behaviour"].weight.normal_()
        _, _, after = model.encode(interaction)
    assert torch.equal(after["semantic"], before["semantic"])
    assert not torch.allclose(after["behaviour"], before["behaviour"])


def test_union_of_each_streams_top_k_from_full_beams_is_reranked_by_both_streams(eager):
    """With each beam as wide as the catalogue, each stream's top-K is its exhaustive top-K by its own code
    log-likelihood; the result is their union ranked by the sum of both streams' (train_rec.py rerank)."""
    model, interaction = eager
    interaction = interaction[torch.arange(3)]
    model.beam_size = model.n_items - 1
    try:
        with torch.no_grad():
            items, scores = model.generate_topk(interaction, 10)
            _, mask, memories = model.encode(interaction)
            everything = torch.arange(1, model.n_items).repeat(3, 1)
            each = {s: model.code_log_likelihood(s, memories[s], mask, everything) for s in ("behaviour", "semantic")}
    finally:
        model.beam_size = TINY_EAGER["beam_size"]
    total = sum(each.values())
    union = torch.zeros_like(total, dtype=torch.bool)
    for log_likelihood in each.values():
        union.scatter_(1, log_likelihood.topk(10, dim=1).indices, True)
    best_scores, best = total.masked_fill(~union, float("-inf")).topk(10, dim=1)
    assert torch.equal(items, best + 1) and torch.allclose(scores, best_scores, atol=1e-4)


def test_generate_topk_returns_distinct_valid_items(eager):
    model, interaction = eager
    with torch.no_grad():
        items, scores = model.generate_topk(interaction, 10)
    assert items.shape == (len(interaction), 10) and torch.all(items >= 1) and torch.all(items < model.n_items)
    assert all(len(set(row.tolist())) == 10 for row in items)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


def test_contrastive_task_adds_a_finite_loss_with_gradients(tiny):
    _, _, model, train_data, _, _ = prepare_run("EAGER", "tiny-beauty", None,
                                                tiny(**TINY_EAGER, gct_weights=[1.0, 10.0]))
    batch = next(iter(train_data))
    loss = model.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.gct_projection["semantic"].weight.grad.abs().sum() > 0
    assert model.semantic_vectors.shape[1] == 384 and model.behaviour_vectors.shape[1] == 8


def test_transfer_task_reconstructs_within_siblings_with_gradients(tiny):
    _, _, model, train_data, _, _ = prepare_run("EAGER", "tiny-beauty", None, tiny(**TINY_EAGER, stt_weight=1.0))
    batch = next(iter(train_data))
    loss = model.calculate_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    transfer_grads = [p.grad for p in model.transfer.parameters() if p.grad is not None]
    assert transfer_grads and all(torch.isfinite(g).all() for g in transfer_grads)
    assert model.guide_projection.weight.grad.abs().sum() > 0 and model.estimation_head.weight.grad.abs().sum() > 0
    # the loss is reconstruction (CE over 8 siblings) + recognition (BCE): about ln 8 + ln 2 untrained
    with torch.no_grad():
        untrained = model.transfer_loss(batch["item_id"], torch.zeros(len(batch), model.decoders["behaviour"].d_model))
    assert 0.5 < untrained.item() < 10


def test_eager_end_to_end_and_checkpoint_reload(tiny):
    check_run_and_reload("EAGER", "tiny-beauty", tiny(**TINY_EAGER))


def test_eager_refuses_trees_whose_node_vocabulary_is_not_a_clean_tree_or_too_large(tiny, monkeypatch):
    import recbole_genrec.model.eager as eager_module

    with pytest.raises(ValueError, match=r"levels of sizes \[8, 8, 8, 1\].*collision: none"):
        prepare_run("EAGER", "tiny-beauty", None,
                    tiny(**{**TINY_EAGER, "tokenizer_params": {**TINY_EAGER["tokenizer_params"], "collision": "append_digit"}}))
    monkeypatch.setattr(eager_module, "MAX_NODE_VOCABULARY", 100)  # 287 items, 8 branches: 8^3 = 512 last-level nodes
    with pytest.raises(ValueError, match=r"287 items need 3 levels of 8 branches.*branches >= 17"):
        prepare_run("EAGER", "tiny-beauty", None, tiny(**TINY_EAGER))


def test_eager_needs_the_tree_tokenizer(tiny):
    with pytest.raises(ValueError, match="tokenizer` must be HKMeans"):
        prepare_run("EAGER", "tiny-beauty", None, tiny(**{**TINY_EAGER, "tokenizer": "RQKMeans",
                                                          "tokenizer_params": {"num_levels": 2, "codebook_size": 8}}))
