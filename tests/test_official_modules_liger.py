"""The LIGER module-swap adapter (benchmarks/official_modules/liger.py) and a weight-copy equivalence check of our
LIGER (recbole_genrec/model/liger.py) against the official module (facebookresearch/liger src/tiger.py,
src/evaluation.py, src/training.py's loss).

Both models are built on the tiny fixture's split with synthetic item text vectors (deterministic Gaussian rows:
the text content plays no part in an equivalence, and the fixture's MiniLM encoding would cost half a minute of
one CPU thread). Every official weight is copied into ours (the T5 stacks through hf_t5.py's name mapping, the
token table permuted from the official token layout to ours, the text MLP, the item and digit position tables, the
input LayerNorm); then the two compute the same SID cross-entropy and dense loss, in eval mode and in train mode
with every dropout at 0, the same gradients, the same dense scores over the catalogue, the same beam (where the
decoding is the same: the official network's HF `generate` restricted as ours restricts it) and the same hybrid
re-ranking of the same candidates. Where the decoding differs (the official beam runs over the whole vocabulary and
keeps its first 20 sequences, invalid ones included, scored as item index 0; ours restricts each step to its
level's codes and keeps the 20 best valid items), the tests assert that difference as it is, not skip it. A last
test measures what the official token layout adds to the softmax when the collision digit is narrower than the
codebooks (unused token rows; not in our vocabulary).

Needs a checkout of facebookresearch/liger (OFFICIAL_LIGER_DIR) and the transformers it pins (4.x): skipped
otherwise (CI has neither)."""
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, TINY_LIGER

CHECKOUT = os.environ.get("OFFICIAL_LIGER_DIR")
pytestmark = [
    pytest.mark.skipif(not CHECKOUT, reason="OFFICIAL_LIGER_DIR (a facebookresearch/liger checkout) is not set"),
    pytest.mark.usefixtures("one_torch_thread"),
]

USERS = 16  # test users decoded: HF's beam search costs ~50 ms per user at beam 40 on one thread
BEAM = 40  # > liger_candidates (20): the official hybrid keeps the first 20 of the beam's sequences
TEXT_DIM = 24


def synthetic_text(config, dataset):
    """Stands in for item_text_embeddings: a fixed Gaussian row per item, row 0 (padding) zero."""
    vectors = np.random.default_rng(7).standard_normal((dataset.item_num, TEXT_DIM)).astype(np.float32)
    vectors[0] = 0.0
    return vectors


def _check_transformers():
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) != 4:
        pytest.skip(f"the official code pins transformers 4.39.3, this environment has {transformers.__version__}")


def _parameter_map(ours, swapped):
    """Our parameter name -> the official module's (`swapped.official`): hf_t5.py's T5 names for the backbone, and the
    text MLP, position tables and input LayerNorm by their official names."""
    from recbole_genrec.model.layers import hf_t5

    backbone = ours.backbone
    names = {f"backbone.{a}": b for a, b in
             hf_t5.parameter_names(len(backbone.encoder_layers), len(backbone.decoder_layers)).items()}
    for i in range(len(ours.text_projection.blocks)):
        for part in ("0.weight", "0.bias", "1.weight", "1.bias"):  # Linear, LayerNorm
            names[f"text_projection.blocks.{i}.{part}"] = f"emb_proj.mlp_blocks.{i}.{part}"
        names[f"text_projection.skips.{i}.weight"] = f"emb_proj.residuals.{i}.weight"  # 1-channel Conv1d
    names.update({
        "text_projection.output.weight": "emb_proj.out_projection.weight",
        "text_projection.output.bias": "emb_proj.out_projection.bias",
        "item_position.weight": "pos_embedding.weight",
        "digit_position.weight": "semantic_pos.weight",
        "input_norm.weight": "input_embed_layernorm.weight",
        "input_norm.bias": "input_embed_layernorm.bias",
    })
    return names


def _official_rows(ours, swapped):
    """Our token id -> the official token id: PAD 0 -> 0, EOS 1 -> the last token, level l code c -> c +
    official_offsets[l] (src/load_data.py expand_id)."""
    rows = torch.full((ours.backbone.vocab_size,), -1, dtype=torch.long)
    rows[ours.vocab.pad_id] = 0
    rows[ours.vocab.eos_id] = swapped.official.config.vocab_size - 1
    for level in range(ours.n_levels):
        tokens = ours.vocab.level_range(level)
        rows[tokens.start:tokens.stop] = swapped.official_offsets[level] + torch.arange(len(tokens))
    return rows


def _build(tiny, cache_dir, tokenizer_params, adapter, cls):
    from recbole_genrec import registry
    from recbole_genrec.model import base, liger
    from recbole_genrec.quick_start import prepare_run

    overrides = {**TINY_LIGER, "tokenizer": "RQKMeans", "tokenizer_params": tokenizer_params,
                 "text_mlp_hidden": [16], "beam_size": BEAM, "liger_candidates": 20, "init_factor": 1.0,
                 "dropout": 0.0, "text_mlp_dropout": 0.0, "input_dropout": 0.0, "cache_dir": str(cache_dir)}
    get_model = registry.get_model
    registry.get_model = lambda name: cls if name == "LIGER" else get_model(name)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(base, "item_text_embeddings", synthetic_text)
            patch.setattr(liger, "item_text_embeddings", synthetic_text)
            config, _, swapped, train_data, _, test_data = prepare_run("LIGER", "tiny-beauty", None,
                                                                     tiny(**overrides))
            ours = liger.LIGER(config, train_data._dataset)
    finally:
        registry.get_model = get_model
    # The official method config's text-MLP and input dropouts (0.2, 0.5) are not read from ours: set to 0 here.
    for module in swapped.official.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return SimpleNamespace(config=config, swapped=swapped, ours=ours, batch=next(iter(train_data)),
                           interaction=next(iter(test_data))[0][torch.arange(USERS)])


def _copy_official_weights(pair):
    """Every official weight into ours; ValueError unless the map pairs all parameters of both."""
    ours, swapped = pair.ours, pair.swapped
    names = _parameter_map(ours, swapped)
    ours_params, official_params = dict(ours.named_parameters()), dict(swapped.official.named_parameters())
    unmatched = sorted(ours_params.keys() ^ names.keys()) + sorted(official_params.keys() ^ set(names.values()))
    if unmatched:
        raise ValueError(f"parameters without a counterpart: {unmatched}")
    rows = _official_rows(ours, swapped)
    with torch.no_grad():
        for name, official_name in names.items():
            ours_params[name].copy_(_as_ours(name, official_params[official_name], rows))
    return names, rows


def _as_ours(name, tensor, rows):
    """An official parameter (or its gradient) in our parameter's layout."""
    if name == "backbone.embedding.weight":
        return tensor[rows]
    if ".skips." in name:
        return tensor[:, 0, :]  # Conv1d(1, out, kernel = stride = in) weight [out, 1, in] = Linear weight [out, in]
    return tensor


@pytest.fixture(scope="module")
def pair(tiny, tmp_path_factory):
    """The swapped class and ours on the same split, official weights copied into ours: 3 levels of 4 codes plus
    a collision digit 11 wide, the official token layout then without unused rows (as wide as ours)."""
    _check_transformers()
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from official_modules import liger as adapter

    cls = adapter.swapped_class(CHECKOUT)
    built = _build(tiny, tmp_path_factory.mktemp("liger-eq"),
                   {"num_levels": 3, "codebook_size": 4, "niter": 5, "collision": "append_digit"}, adapter, cls)
    assert built.swapped.official.config.vocab_size == built.ours.backbone.vocab_size  # no unused official rows
    built.names, built.rows = _copy_official_weights(built)
    built.adapter = adapter
    built.tiger, built.evaluation = adapter._import_official(CHECKOUT)
    return built


@pytest.fixture()
def swapped(pair):
    return pair.swapped, pair.batch, pair.interaction


# ---- the adapter --------------------------------------------------------------------------------------------------

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
    model.eval()


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


# ---- equivalence with the official weights copied into ours ----------------------------------------------------

def _official_losses(pair, batch):
    """src/training.py train_epoch's two terms through the official functions: HF's next-SID cross-entropy from
    model_forward, and the dense cross-entropy of get_target_embed with the cold items' logits at -100."""
    model, evaluation = pair.swapped, pair.evaluation
    target = batch[model.POS_ITEM_ID]
    official_batch = model.official_batch(model.history(batch)[0], labels=model.official_item_sids[target])
    outputs, _ = evaluation.model_forward(model.official, official_batch, target.device, model.n_levels,
                                          model.method_config)
    _, logits = evaluation.get_target_embed(model.official.predicted_embedding, model.official, model.method_config,
                                            model.official_item_embedding())
    logits[:, model.cold_items - 1] = -100
    return outputs.loss, F.cross_entropy(logits, target - 1)


def _our_losses(pair, batch):
    encoded = pair.ours.encode(batch)
    return pair.ours.next_sid_loss(batch, encoded), pair.ours.dense_loss(batch, encoded[2])


def test_weight_copy_pairs_every_parameter(pair):
    names = pair.names
    assert len(names) == len(dict(pair.ours.named_parameters())) == len(dict(pair.swapped.official.named_parameters()))
    assert sorted(pair.rows.tolist()) == list(range(pair.ours.backbone.vocab_size))  # a permutation of the rows
    official = pair.swapped.official
    for tied in (official.encoder.embed_tokens, official.decoder.embed_tokens, official.lm_head):
        assert tied.weight is official.shared.weight  # one token table, as ours
    from recbole_genrec.model.layers import hf_t5

    hf_t5._check_representable(official.config, pair.ours.backbone)  # same buckets, eps, output scaling, start


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_same_losses_and_gradients(pair, mode):
    """Eval mode, and train mode with every dropout at 0 (ours: config; official: its modules' p and T5's attention
    dropout): the same SID cross-entropy, dense loss and gradients. The official text MLP runs on a copy of each
    item's vector per token (T x L rows, padding included), ours once per distinct history item: same numbers."""
    ours, model = pair.ours, pair.swapped
    training = mode == "train"
    ours.train(training)
    model.train(training)
    for module in list(ours.modules()) + list(model.official.modules()):
        assert not isinstance(module, torch.nn.Dropout) or module.p == 0.0
    assert all(getattr(m, "dropout", 0.0) == 0.0 for m in model.official.modules()
               if type(m).__name__ == "T5Attention")
    ours.zero_grad()
    model.zero_grad()
    official_sid, official_dense = _official_losses(pair, pair.batch)
    our_sid, our_dense = _our_losses(pair, pair.batch)
    (official_sid + official_dense).backward()
    (our_sid + our_dense).backward()
    torch.testing.assert_close(our_sid, official_sid, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(our_dense, official_dense, rtol=1e-6, atol=1e-6)
    # the adapter's loss composition (SID weight 1 + dense weight 1) and ours
    with torch.no_grad():
        torch.testing.assert_close(ours.calculate_loss(pair.batch), model.calculate_loss(pair.batch),
                                   rtol=1e-6, atol=1e-6)
    official_params = dict(model.official.named_parameters())
    for name, parameter in ours.named_parameters():
        official_grad = _as_ours(name, official_params[pair.names[name]].grad, pair.rows)
        assert parameter.grad is not None and official_grad is not None, name
        scale = float(official_grad.abs().max())
        torch.testing.assert_close(parameter.grad, official_grad, rtol=1e-4, atol=1e-5 * max(scale, 1e-3),
                                   msg=lambda message: f"{name}: {message}")
    ours_norm = torch.norm(torch.stack([p.grad.norm() for p in ours.parameters()]))
    official_norm = torch.norm(torch.stack([p.grad.norm() for p in model.official.parameters()]))
    torch.testing.assert_close(ours_norm, official_norm, rtol=1e-5, atol=0.0)
    ours.zero_grad()
    model.zero_grad()
    ours.eval()
    model.eval()


def _official_user_embedding(pair, interaction):
    """The official dense query (TIGER.forward's encoder output at the last history token) and generate's inputs."""
    model, evaluation = pair.swapped, pair.evaluation
    batch = model.official_batch(model.history(interaction)[0])
    _, inputs = evaluation.model_forward(model.official, batch, "cpu", model.n_levels, model.method_config,
                                         skip_forward=True)
    model.official(**inputs, decoder_input_ids=torch.zeros(len(interaction), 1, dtype=torch.long))
    return model.official.predicted_embedding, inputs, batch


@torch.no_grad()
def test_same_dense_scores_over_the_catalogue(pair):
    ours, model, interaction = pair.ours, pair.swapped, pair.interaction
    ours.eval()
    model.eval()
    user, _, _ = _official_user_embedding(pair, interaction)
    _, official_logits = pair.evaluation.get_target_embed(user, model.official, model.method_config,
                                                          model.official_item_embedding())
    our_logits = ours.dense_logits(interaction, ours.encode(interaction)[2])
    assert torch.isneginf(our_logits[:, 0]).all()  # the padding item
    torch.testing.assert_close(our_logits[:, 1:], official_logits, rtol=0.0, atol=2e-5)
    k = 20
    official_items, _ = model.ranked_topk(interaction, k, "dense")  # the adapter's evaluate_dense_sids ranking
    our_items, _ = ours.ranked_topk(interaction, k, "dense")
    assert torch.equal(official_items, our_items)


def _hf_beam(pair, inputs, allowed):
    """The official network's HF `generate` (beam BEAM, all sequences returned) with `prefix_allowed_tokens_fn` =
    `allowed(prefix official tokens) -> official tokens`; -> (codes [B, BEAM, L], sum of log-probabilities)."""
    model = pair.swapped
    levels = model.n_levels
    output = model.official.generate(
        **inputs, num_beams=BEAM, num_return_sequences=BEAM, max_new_tokens=levels, use_cache=True,
        prefix_allowed_tokens_fn=lambda _, prefix: allowed(prefix[1:].tolist()), output_scores=True,
        return_dict_in_generate=True)
    tokens = output.sequences[:, 1:1 + levels].reshape(len(inputs["attention_mask"]), BEAM, levels)
    # HF ranks a finished beam by its summed log-probability / generated length ** length_penalty (1.0)
    return tokens - torch.tensor(model.official_offsets), output.sequences_scores.view(-1, BEAM) * levels


@torch.no_grad()
@pytest.mark.parametrize("constrained", [False, True])
def test_same_beam_as_the_official_network_under_the_same_restriction(pair, constrained):
    """Our beam = HF `generate` on the official network with the restriction ours decodes under, for the same
    weights: `constrained_beam: False` (LIGER.yaml's) restricts every step to its level's codes (inference/
    beam_search.py: log-probabilities normalised over the whole vocabulary, then the level's range kept),
    `constrained_beam: True` to prefixes of catalogue items. Same sequences, same order, same scores."""
    ours, model = pair.ours, pair.swapped
    ours.eval()
    model.eval()
    levels, sizes, offsets = model.n_levels, model.official_level_sizes, model.official_offsets
    _, inputs, _ = _official_user_embedding(pair, pair.interaction)
    if constrained:
        codes = model.item_codes[1:].tolist()
        children = {}
        for code in codes:
            for level in range(levels):
                children.setdefault(tuple(code[:level]), set()).add(code[level])

        def allowed(prefix):
            prefix = tuple(token - offsets[level] for level, token in enumerate(prefix))
            return sorted(code + offsets[len(prefix)] for code in children[prefix])
    else:
        def allowed(prefix):
            return list(range(offsets[len(prefix)], offsets[len(prefix)] + sizes[len(prefix)]))
    official_codes, official_scores = _hf_beam(pair, inputs, allowed)
    previous = ours.constrained
    ours.constrained = constrained
    try:
        output = ours.beam_search(ours.encode(pair.interaction), BEAM)
    finally:
        ours.constrained = previous
    # ours moves beams naming no item after the valid ones (stable); restore the beam's own order by score
    generated = output.codes.ge(0).all(-1)
    our_scores = torch.where(output.items >= 0, output.scores, torch.full_like(output.scores, float("nan")))
    official_items = ours.catalogue.lookup_items(official_codes)
    for user in range(len(pair.interaction)):
        valid = official_items[user] >= 0
        # the valid sequences in the same order with the same scores, the invalid ones as a set (ours keeps their
        # codes, not their scores)
        assert torch.equal(output.items[user][output.items[user] >= 0], official_items[user][valid])
        torch.testing.assert_close(our_scores[user][output.items[user] >= 0], official_scores[user][valid],
                                   rtol=0.0, atol=1e-4)
        invalid_ours = {tuple(c) for c in output.codes[user][generated[user] & (output.items[user] < 0)].tolist()}
        assert invalid_ours == {tuple(c) for c in official_codes[user][~valid].tolist()}
        if constrained:
            assert valid.all()


@torch.no_grad()
def test_the_official_beam_is_unrestricted_and_keeps_invalid_sequences(pair):
    """Where the decoding differs (not skipped): the official `evaluate` (HF generate over the whole vocabulary,
    EOS and padding included) returns sequences with tokens of another level or naming no item and
    `generate_then_dense` keeps its first 20 of them as they are, scoring an invalid one as item index 0 (our item
    1), its slot in the list naming nothing. Ours never emits a token outside its level's codes and keeps the 20 best
    valid items of its beam. Asserted: the official hybrid list is exactly that rule applied to the official first
    20 sequences with our dense scores, and it holds invalid slots where ours holds items."""
    ours, model = pair.ours, pair.swapped
    ours.eval()
    model.eval()
    interaction = pair.interaction
    sizes, offsets = model.official_level_sizes, model.official_offsets
    candidates = model.candidates
    batch = model.official_batch(model.history(interaction)[0])
    first = model.official_decode(batch, candidates, "generative")  # [B, 20, L] official tokens, beam BEAM
    codes = first - torch.tensor(offsets)
    out_of_level = ((codes < 0) | (codes >= torch.tensor(sizes))).any(-1)
    first_items, _ = model.sids_to_items(first, candidates)
    # measured at this initialisation: most official sequences mix levels (or end early), none names an item
    assert out_of_level.float().mean() > 0.5
    assert (first_items < 0).float().mean() >= out_of_level.float().mean()
    our_output = ours.beam_search(ours.encode(interaction), BEAM)
    assert (our_output.codes.ge(0) & our_output.codes.lt(torch.tensor(ours.vocab_sizes))).all()  # in level

    # Both hybrids as one rule from our dense scores: candidates + every cold item, by dense score (stable), an item
    # once. Official: the first 20 sequences, an invalid one scored as item 1 and naming nothing in its slot.
    # Ours: the first 20 valid items of its beam (the level-restricted beam, equal to the official network's HF
    # generate under that restriction, test above), invalid codes dropped, the list compacted.
    dense = ours.dense_logits(interaction, ours.encode(interaction)[2])
    k = candidates + len(ours.cold_items)

    def rule(candidate_items, invalid_scored_as_first_item):
        scored_as = candidate_items.clamp(min=0)
        if invalid_scored_as_first_item:
            scored_as = torch.where(candidate_items >= 0, candidate_items, torch.ones_like(candidate_items))
        items = torch.cat([candidate_items, ours.cold_items.expand(len(interaction), -1)], dim=1)
        scores = torch.cat([dense.gather(1, scored_as), dense[:, ours.cold_items]], dim=1)
        if not invalid_scored_as_first_item:
            scores = scores.masked_fill(items < 0, float("-inf"))
        ranked = items.gather(1, scores.argsort(dim=1, descending=True, stable=True)).tolist()
        lists = []
        for row in ranked:
            seen, out = set(), []
            for item in row:
                out.append(-1 if item in seen else item)  # a repeat keeps its slot, naming nothing
                seen.add(item)
            if not invalid_scored_as_first_item:
                out = [item for item in out if item >= 0]
                out += [-1] * (k - len(out))
            lists.append(out[:k])
        return lists

    official_hybrid, _ = model.ranked_topk(interaction, k, "hybrid")
    assert official_hybrid.tolist() == rule(first_items, True)
    our_candidates = our_output.items[:, :candidates]  # valid first (stable), -1 where fewer than 20 are valid
    our_hybrid, _ = ours.ranked_topk(interaction, k, "hybrid")
    assert our_hybrid.tolist() == rule(our_candidates, False)
    # measured: ours has valid candidates where the official first 20 hold none, so fewer empty slots
    assert (our_candidates >= 0).any(1).all()
    assert int((official_hybrid < 0).sum()) > int((our_hybrid < 0).sum())


@torch.no_grad()
def test_same_hybrid_ranking_of_the_same_candidates(pair):
    """The official `generate_then_dense`, called verbatim with the candidates our beam gives (constrained, so all 20
    name items) and the official dense query, ranks them and every cold-start item as our `hybrid_topk` does; the
    official list keeps an item twice where the beam named a cold item (ours keeps it once)."""
    ours, model, evaluation = pair.ours, pair.swapped, pair.evaluation
    ours.eval()
    model.eval()
    interaction = pair.interaction
    previous = ours.constrained
    ours.constrained = True
    try:
        encoded = ours.encode(interaction)
        candidates = ours.candidate_items(encoded)
        k = candidates.shape[1] + len(ours.cold_items)
        our_items, _ = ours.hybrid_topk(interaction, encoded, k)
    finally:
        ours.constrained = previous
    assert (candidates >= 0).all() and candidates.shape[1] == model.candidates
    user, _, batch = _official_user_embedding(pair, interaction)
    with pair.adapter._recording(evaluation) as ranked:
        evaluation.generate_then_dense(
            model.official, [batch], model.official_cold_sids, "cpu", method_config=model.method_config,
            returned_cand=list(model.official_item_sids[candidates]), returned_embd=list(user),
            item2sid=model.official_item_sids[1:].numpy(), item_embedding=model.official_item_embedding(),
            KEYS=[k], RETRIEVE_KEY=[candidates.shape[1]])
    (official_sids,) = ranked
    official_items, _ = model.sids_to_items(official_sids, k)  # repeats -> -1 in their slot
    repeats = 0
    for user_index in range(len(interaction)):
        official_row, our_row = official_items[user_index], our_items[user_index]
        assert official_row[official_row >= 0].tolist() == our_row[our_row >= 0].tolist()
        repeats += int((official_row < 0).sum())
    cold = set(ours.cold_items.tolist())
    assert repeats == sum(len(cold & set(row.tolist())) for row in candidates)


# ---- the official token layout where the collision digit is narrower than the codebooks -------------------------

@pytest.fixture(scope="module")
def gapped(tiny, tmp_path_factory, pair):
    """3 levels of 8 codes and, on this data, a collision digit 5 wide: the official layout gives that digit 8 token
    rows (src/load_data.py last_codebook_size = max(digits, codebook_size)), 3 of them naming no code."""
    cls = pair.adapter.swapped_class(CHECKOUT)
    built = _build(tiny, tmp_path_factory.mktemp("liger-eq-gapped"),
                   {"num_levels": 3, "codebook_size": 8, "niter": 5, "collision": "append_digit"}, pair.adapter, cls)
    built.evaluation = pair.evaluation
    return built


def test_official_vocabulary_has_unused_rows_in_its_softmax(gapped):
    """Not a weight-copy equivalence: the official vocabulary is larger than ours by the unused collision-digit rows,
    and HF's T5 cross-entropy (and the unrestricted beam) normalise over them too. Asserted: with the official
    weights copied into ours (token rows permuted), the official SID loss over the rows ours has equals ours; over
    all its rows it is larger by exactly the unused rows' share of the softmax (measured: 4.4777 against 4.4453,
    +0.032 nats for 3 unused rows of 34)."""
    ours, model = gapped.ours, gapped.swapped
    sizes, codebook = model.official_level_sizes, max(model.official_level_sizes[:-1])
    assert sizes[-1] < codebook
    extra = model.official.config.vocab_size - ours.backbone.vocab_size
    assert extra == codebook - sizes[-1]
    names = _parameter_map(ours, model)
    rows = _official_rows(ours, model)
    unused = sorted(set(range(model.official.config.vocab_size)) - set(rows.tolist()))
    assert len(unused) == extra
    ours_params, official_params = dict(ours.named_parameters()), dict(model.official.named_parameters())
    with torch.no_grad():
        for name, official_name in names.items():
            ours_params[name].copy_(_as_ours(name, official_params[official_name], rows))
    ours.eval()
    model.eval()
    with torch.no_grad():
        target = gapped.batch[model.POS_ITEM_ID]
        batch = model.official_batch(model.history(gapped.batch)[0], labels=model.official_item_sids[target])
        outputs, _ = gapped.evaluation.model_forward(model.official, batch, "cpu", model.n_levels,
                                                     model.method_config)
        logits = outputs.logits.float()  # [B, L, V official]
        labels = batch["labels_sids"]
        inverse = torch.full((model.official.config.vocab_size,), -1, dtype=torch.long)
        inverse[rows] = torch.arange(len(rows))
        shared_only = F.cross_entropy(logits[:, :, rows].flatten(0, 1), inverse[labels].flatten())
        our_sid = ours.next_sid_loss(gapped.batch, ours.encode(gapped.batch))
        torch.testing.assert_close(shared_only, our_sid, rtol=1e-6, atol=1e-6)
        share = (logits[:, :, unused].logsumexp(-1) - logits[:, :, rows].logsumexp(-1)).exp()
        torch.testing.assert_close(outputs.loss - our_sid, torch.log1p(share).mean(), rtol=1e-4, atol=1e-6)
        assert outputs.loss - our_sid > 1e-3
