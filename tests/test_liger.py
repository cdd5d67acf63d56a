"""LIGER: the dense head and the hybrid's cold-start re-ranking, and the model as the official code builds it
(facebookresearch/liger): the input path, cold items out of the dense loss, beam 100 keeping 20 candidates, and every
such choice read from LIGER.yaml."""
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from recbole_genrec.config import GenRecConfig
from recbole_genrec.inference import rerank_candidates, rerank_scored_candidates
from recbole_genrec.model.layers import Dropout, RMSNorm, cosine_logits
from recbole_genrec.model.liger import ResidualMLP, standardized_text
from recbole_genrec.quick_start import prepare_run, run_recbole_genrec
from recbole_genrec.representation import item_text_embeddings

from conftest import ROOT, TINY_LIGER, overfit_one_batch

LIGER_YAML = os.path.join(ROOT, "properties", "model", "LIGER.yaml")


@pytest.fixture(scope="module")
def prepared(tiny):
    """(config, model, train_data, test_data) of the tiny LIGER, once for the module."""
    config, _, model, train_data, _, test_data = prepare_run("LIGER", "tiny-beauty", None, tiny(**TINY_LIGER))
    return config, model, train_data, test_data


# ---- model: loss ---------------------------------------------------------------------------------------------------
def test_generation_losses_are_finite_and_decrease(tiny):
    _, _, model, train_data, _, _ = prepare_run("LIGER", "tiny-beauty", None, tiny(**TINY_LIGER))
    losses = overfit_one_batch(model, next(iter(train_data)))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


# ---- LIGER: dense re-ranking and cold-start items -----------------------------------------------------------------
def test_rerank_puts_a_cold_item_with_the_best_dense_score_first():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.1, 0.95, 0.2, 0.3]])  # item 4 has the best score: cold, not a beam
    items, top = rerank_candidates(torch.tensor([[1, 3, -1]]), torch.tensor([4, 6]), scores, k=4)
    assert items.tolist() == [[4, 1, 6, 3]]  # 2 and 5 are neither beams nor cold: never ranked
    assert torch.allclose(top, torch.tensor([[0.95, 0.5, 0.3, 0.1]]))
    short, _ = rerank_candidates(torch.tensor([[1, -1]]), torch.tensor([4]), scores, k=4)
    assert short.tolist() == [[4, 1, -1, -1]]


def _rerank_over_the_catalogue(candidates, extra_items, scores, k):
    """The re-ranking as a [B, N + 1] mask over the whole catalogue and a top-k (the former implementation): the
    reference the candidate-only re-ranking must reproduce."""
    allowed = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, candidates.clamp(min=0), True)
    allowed[:, extra_items] = True
    allowed[:, 0] = False
    top_scores, items = scores.float().masked_fill(~allowed, float("-inf")).topk(k, dim=1)
    return items.masked_fill(~torch.isfinite(top_scores), -1), top_scores


def test_rerank_of_scored_candidates_equals_the_catalogue_mask_ranking():
    generator = torch.Generator().manual_seed(0)
    n_items, k = 500, 10
    scores = torch.randn(64, n_items + 1, generator=generator)
    candidates = torch.randint(1, n_items + 1, (64, 20), generator=generator)
    candidates[:, 15:] = -1  # rows with fewer candidates
    candidates[::2, 3] = candidates[::2, 2]  # a candidate twice
    extra = torch.tensor([7, 42, 99, 300, 451])
    candidates[1, 0] = 42  # a candidate that is an extra item too
    expected = _rerank_over_the_catalogue(candidates, extra, scores, k)
    items, top = rerank_scored_candidates(candidates, scores.gather(1, candidates.clamp(min=0)), extra,
                                          scores[:, extra], k)
    assert torch.equal(items, expected[0]) and torch.equal(top, expected[1])
    assert torch.equal(items, rerank_candidates(candidates, extra, scores, k)[0])
    # fewer candidates than k: -1 / -inf after the real ones, as the catalogue mask gives
    few, few_scores = rerank_scored_candidates(candidates[:, 13:], scores.gather(1, candidates[:, 13:].clamp(min=0)),
                                               extra[:1], scores[:, extra[:1]], 5)
    reference = _rerank_over_the_catalogue(candidates[:, 13:], extra[:1], scores, 5)
    assert torch.equal(few, reference[0]) and torch.equal(few_scores, reference[1]) and (few[:, 3:] == -1).all()
    # equal scores: ascending item ids
    tied, _ = rerank_scored_candidates(torch.tensor([[9, 4, -1]]), torch.tensor([[1.0, 1.0, 0.0]]),
                                       torch.tensor([6]), torch.tensor([[1.0]]), 3)
    assert tied.tolist() == [[4, 6, 9]]


def _fresh_dense_logits(model, interaction, memory):
    """LIGER's dense scores as they were computed before the catalogue was cached: the text MLP over every item."""
    logits = cosine_logits(model.dense_user(interaction, memory), model.text_projection(model.item_text),
                           model.dense_temperature)
    logits[:, 0] = float("-inf")
    return logits


def test_liger_hybrid_and_dense_rankings_equal_the_whole_catalogue_computation(tiny):
    """The hybrid scores only the beam's candidates and the cold items, from the cached projection of the
    catalogue: the same top-k lists as the [B, N + 1] dense scores masked to those items; the dense ranking reads
    the cached projection: bit-identical scores."""
    _, _, model, train_data, _, test_data = prepare_run("LIGER", "tiny-beauty", None, tiny(**TINY_LIGER))
    overfit_one_batch(model, next(iter(train_data)), steps=2)
    model.eval()
    compared = 0
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0]
            encoded = model.encode(interaction)
            dense = _fresh_dense_logits(model, interaction, encoded[2])
            assert torch.equal(model.dense_logits(interaction, encoded[2]), dense)
            items, scores = model.ranked_topk(interaction, 10, "dense")
            assert torch.equal(scores, dense.topk(10, dim=1).values) and torch.equal(items, dense.topk(10, dim=1)[1])
            items, scores = model.generate_topk(interaction, 10)
            expected, expected_scores = _rerank_over_the_catalogue(model.candidate_items(encoded), model.cold_items,
                                                                   dense, 10)
            assert torch.equal(items, expected)
            assert torch.allclose(scores, expected_scores, rtol=1e-5, atol=1e-5, equal_nan=True)
            compared += len(items)
    assert compared >= 10


def test_liger_catalogue_projection_is_computed_once_per_evaluation(tiny):
    _, _, model, train_data, _, test_data = prepare_run("LIGER", "tiny-beauty", None, tiny(**TINY_LIGER))
    catalogue = len(model.item_text)
    calls = []
    model.text_projection.register_forward_hook(
        lambda _, args, out: calls.append(1) if len(args[0]) == catalogue else None)
    batches = [batch[0] for batch in test_data]
    model.eval()
    with torch.no_grad():
        for interaction in batches:
            model.generate_topk(interaction, 10)
            model.selection_topk(interaction, 10)  # dense
        keys = model.catalogue_keys()
    assert len(calls) == 1  # every batch, both rankings: one projection of the catalogue
    overfit_one_batch(model, next(iter(train_data)), steps=1)  # trains: train() drops it, the step changes weights
    assert len(calls) == 2  # the dense loss projects the catalogue afresh, with gradients
    model.eval()
    with torch.no_grad():
        assert not torch.equal(model.catalogue_keys(), keys)
        assert torch.equal(model.catalogue_keys(), F.normalize(model.text_projection(model.item_text), dim=-1))
        calls.clear()
        model.catalogue_keys()
        assert len(calls) == 0
        model.text_projection.output.bias.add_(1.0)  # a weight changed in place, still in eval mode
        changed = model.catalogue_keys()
        assert len(calls) == 1 and torch.equal(changed, F.normalize(model.text_projection(model.item_text), dim=-1))
    with torch.enable_grad():
        assert model.catalogue_keys().requires_grad  # a gradient-recording caller gets its own projection


def test_liger_hybrid_ranks_only_beam_items_and_cold_items(tiny):
    _, _, model, train_data, _, test_data = prepare_run("LIGER", "tiny-beauty", None, tiny(**TINY_LIGER))
    overfit_one_batch(model, next(iter(train_data)), steps=2)
    model.eval()
    interaction = next(iter(test_data))[0]
    cold = set(model.cold_items.tolist())
    assert cold  # the fixture has cold-start items
    with torch.no_grad():
        items, _ = model.generate_topk(interaction, 10)
        encoded = model.encode(interaction)
        beams = model.beam_search(encoded, 10).items
        dense = model.dense_logits(interaction, encoded[2])
    for user in range(len(items)):
        allowed = cold | set(beams[user].tolist())
        assert set(items[user].tolist()) - {-1} <= allowed
        assert dense[user, items[user, 0]] == max(dense[user, item] for item in allowed if item > 0)


# ---- end to end ----------------------------------------------------------------------------------------------------
def test_end_to_end_with_cold_start_report_and_checkpoint_reload(tiny, capsys):
    from recbole_genrec.quick_start import load_data_and_model
    from recbole_genrec.trainer import GenRecTrainer

    result = run_recbole_genrec(model="LIGER", dataset="tiny-beauty", config_dict=tiny(**TINY_LIGER))
    cold = result["test_cold_start"]
    assert cold["cold_users"] > 0 and cold["cold_users"] + cold["inset_users"] == result["test_users"]
    assert {"cold_recall@10", "inset_recall@10", "cold_items_in_top10"} <= set(cold)
    # Semantic IDs come back from the checkpoint, LIGER's text embeddings and cold items from the cache and split.
    config, model, dataset, _, _, test_data = load_data_and_model(result["checkpoint"])
    assert torch.equal(model.item_codes, dataset.semantic_ids.codes)
    trainer = GenRecTrainer(config, model)
    assert trainer.evaluate(test_data, load_best_model=False) == result["test_result"]
    assert trainer.last_cold_start == cold

    # benchmarks/liger_rankings.py ranks the same checkpoint every way; the hybrid with the run's own number of
    # candidates (the beam of 10) is the run's test result.
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import liger_rankings

    liger_rankings.main([result["checkpoint"], "--candidates=5,10"])
    lines = {line.split(":")[0].strip(): line for line in capsys.readouterr().out.splitlines()[1:]}
    assert list(lines) == ["hybrid@5", "hybrid@10", "dense", "generative"]
    assert f"recall@10 {result['test_result']['recall@10']:.4f}," in lines["hybrid@10"]


# ---- the official recipe: settings, initialisation, input path, candidates, checkpoint selection -------------------
def test_official_settings_come_from_the_yaml(tiny):
    with open(LIGER_YAML) as handle:
        defaults = yaml.safe_load(handle)
    expected = {  # configs/dataset/amazon.yaml, configs/method/setting.yaml
        "init_factor": 0.02, "dropout": 0.2, "text_mlp_hidden": [768, 512, 256], "text_mlp_dropout": 0.2,
        "input_dropout": 0.5, "input_layernorm": True, "text_standardize": True, "dense_mask_cold": True,
        "learning_rate": 0.0003, "weight_decay": 0.035, "warmup_steps": 10000, "lr_scheduler": "cosine",
        "beam_size": 100, "liger_candidates": 20, "eval_step": 10, "stopping_step": 4, "tokenizer_fit_on": "train",
        "num_encoder_layers": 6, "num_decoder_layers": 6, "dense_temperature": 0.07,
    }
    assert {key: defaults[key] for key in expected} == expected
    assert float(defaults["layer_norm_eps"]) == 1e-8
    rqvae = defaults["tokenizer_params"]
    assert {key: rqvae[key] for key in ("latent_dim", "hidden_dims", "dropout", "epochs", "batch_size",
                                        "weight_decay", "lr", "beta")} == {
        "latent_dim": 128, "hidden_dims": [768, 512, 256], "dropout": 0.1, "epochs": 8000, "batch_size": 2048,
        "weight_decay": 0.1, "lr": 0.001, "beta": 0.25}
    # the run's config carries them (the tiny fixture only shrinks the network and the tokenizer)
    config = GenRecConfig(model="LIGER", dataset="tiny-beauty", config_dict=tiny(**TINY_LIGER))
    assert all(config[key] == expected[key] for key in ("init_factor", "input_dropout", "liger_candidates",
                                                         "tokenizer_fit_on", "dense_mask_cold"))


def _relative_std(weight, expected):
    return abs(weight.std().item() / expected - 1)


@pytest.mark.parametrize("tie", [True, False])
def test_initialisation_is_the_official_models(tiny, prepared, tie):
    """As the official model under transformers 4.39.3: every T5 stack weight at initializer_factor (0.02) x T5's
    std and norm weights 0.02, but the shared token table (tied to the output) at nn.Embedding's N(0, 1), which the
    stacks mark initialised before LIGER's `_init_weights` override could rescale it; an untied head at N(0, 0.02);
    the text MLP and the position tables at PyTorch's defaults."""
    model = prepared[1] if tie else prepare_run("LIGER", "tiny-beauty", None,
                                             tiny(**TINY_LIGER, tie_embeddings=False))[2]
    backbone, factor = model.backbone, 0.02
    d, heads, d_kv = backbone.d_model, backbone.num_heads, backbone.d_kv
    assert _relative_std(backbone.embedding.weight, 1.0) < 0.1
    if tie:
        assert backbone.lm_head is None
    else:
        assert _relative_std(backbone.lm_head.weight, factor) < 0.1
    layer, cross = backbone.encoder_layers[0], backbone.decoder_layers[0].cross_attention
    attention, ffn = layer.attention, layer.ffn
    for weight, std in [(attention.query.weight, (d * d_kv) ** -0.5), (attention.key.weight, d ** -0.5),
                        (attention.value.weight, d ** -0.5), (attention.output.weight, (heads * d_kv) ** -0.5),
                        (ffn.inner.weight, d ** -0.5), (ffn.outer.weight, ffn.inner.out_features ** -0.5),
                        (cross.key.weight, d ** -0.5)]:
        assert _relative_std(weight, factor * std) < 0.15
    assert _relative_std(backbone.encoder_position_bias.embedding.weight, factor * d ** -0.5) < 0.4  # 64 values
    assert all(torch.all(m.weight == factor) for m in backbone.modules() if isinstance(m, RMSNorm))
    assert _relative_std(model.item_position.weight, 1.0) < 0.15
    assert _relative_std(model.digit_position.weight, 1.0) < 0.2
    first = model.text_projection.blocks[0][0]
    assert _relative_std(first.weight, (3 * first.in_features) ** -0.5) < 0.05  # nn.Linear's uniform default
    # the semantic-ID token is a sizeable part of the summed input (at factor x 1.0 it was ~0.02% of its variance)
    model.eval()
    interaction = next(iter(prepared[3]))[0]
    with torch.no_grad():
        input_ids, mask = model.encoder_inputs(interaction)
        token = backbone.embedding(input_ids)[mask]
        model.input_norm, norm = nn.Identity(), model.input_norm
        try:
            summed = model.input_embeddings(interaction)[2][mask]
        finally:
            model.input_norm = norm
    assert (token.var(-1) / summed.var(-1)).mean() > 0.1


def test_quick_profile_departs_from_the_recipe_only_where_its_budget_needs(tiny):
    """The CPU quick start (285 steps) starts from T5's std (factor 1) with dropout 0.1; the hybrid keeps the
    official beam of 100 and its 20 candidates, and the input path the official dropout."""
    from recbole_genrec.cli import load_profile

    config = GenRecConfig(model="LIGER", dataset="tiny-beauty", config_dict=tiny(**load_profile("LIGER")))
    assert (config["init_factor"], config["dropout"]) == (1.0, 0.1)
    assert (config["beam_size"], config["liger_candidates"], config["liger_inference"]) == (100, 20, "hybrid")
    assert (config["input_dropout"], config["text_mlp_dropout"]) == (0.5, 0.2)


def test_model_reads_its_input_path_from_the_settings(tiny):
    overrides = {**TINY_LIGER, "text_mlp_hidden": [48], "text_mlp_dropout": 0.3, "input_dropout": 0.1,
                 "input_layernorm": False, "init_factor": 1.0, "liger_candidates": 4}
    _, _, model, _, _, _ = prepare_run("LIGER", "tiny-beauty", None, tiny(**overrides))
    assert [block[0].out_features for block in model.text_projection.blocks] == [48]
    assert model.text_projection.input_dropout.p == 0.3 and model.text_projection.blocks[0][3].p == 0.3
    assert isinstance(model.input_norm, nn.Identity) and model.input_dropout.p == 0.1
    assert model.candidates == 4
    assert all(m.weight.eq(1.0).all() for m in model.backbone.modules() if isinstance(m, RMSNorm))


def test_input_path_has_the_official_structure(prepared, tiny):
    config, model, _, test_data = prepared
    mlp = model.text_projection
    assert isinstance(mlp, ResidualMLP) and model.input_dropout.p == 0.5 and mlp.input_dropout.p == 0.2
    assert len(mlp.blocks) == 3 and [block[0].out_features for block in mlp.blocks] == [768, 512, 256]
    for block, skip in zip(mlp.blocks, mlp.skips):
        assert [type(layer) for layer in block] == [nn.Linear, nn.LayerNorm, nn.ReLU, Dropout]
        assert block[1].eps == 1e-8 and block[3].p == 0.2 and skip.bias is None
    assert mlp.output.in_features == 256 and mlp.output.out_features == config["d_model"]
    assert isinstance(model.input_norm, nn.LayerNorm) and model.input_norm.eps == 1e-8
    norms = [m for m in model.backbone.modules() if isinstance(m, RMSNorm)]
    assert norms and all(m.eps == 1e-8 for m in norms)
    # the summed input is LayerNorm-ed: zero mean, unit variance per position (no dropout in eval)
    model.eval()
    interaction = next(iter(test_data))[0]
    with torch.no_grad():
        _, mask, hidden = model.input_embeddings(interaction)
    real = hidden[mask]
    assert torch.allclose(real.mean(-1), torch.zeros(len(real)), atol=1e-4)
    assert torch.allclose(real.var(-1, unbiased=False), torch.ones(len(real)), atol=1e-3)
    # dropout 0.5 acts on the summed input in training
    model.train()
    torch.manual_seed(0)
    _, _, dropped = model.input_embeddings(interaction)
    assert 0.4 < (dropped[mask] == 0).float().mean().item() < 0.6
    model.eval()


def test_text_mlp_runs_once_per_training_step_for_history_and_dense_keys(prepared):
    """One text-MLP pass over the catalogue per training step gives both the history tokens' text and the dense
    keys (the official code projects the catalogue for the dense loss and a copy per history token besides): the
    official per-token values in evaluation; in training one dropout mask per item and step, shared by all its
    tokens and by its dense key."""
    _, model, train_data, _ = prepared
    batch = next(iter(train_data))
    items, _ = model.history(batch)
    catalogue = len(model.item_text)
    rows = []  # rows through the text MLP, per call
    hook = model.text_projection.register_forward_hook(lambda _, args, out: rows.append(args[0][..., 0].numel()))
    try:
        model.eval()
        with torch.no_grad():
            text = model.item_vectors()[items]
            per_token = model.text_projection(model.item_text[items])
        assert rows == [catalogue, items.numel()]
        assert torch.allclose(text, per_token, atol=1e-5)
        model.train()
        rows.clear()
        vectors = []
        capture = model.text_projection.register_forward_hook(lambda _, args, out: vectors.append(out))
        try:
            model.calculate_loss(batch).backward()
        finally:
            capture.remove()
        assert rows == [catalogue]  # the step's only pass: history input and dense loss read the same rows
        trained = vectors[0].detach()
        assert not torch.allclose(trained[items], text, atol=1e-3)  # the dropout acts in training
    finally:
        hook.remove()
        model.eval()


def test_item_text_is_standardised_over_the_catalogue(prepared):
    config, model, train_data, _ = prepared
    raw = item_text_embeddings(config, train_data._dataset)
    text = model.item_text.numpy()
    assert np.allclose(text, standardized_text(raw)) and np.all(text[0] == 0)
    assert np.allclose(text[1:].mean(0), 0, atol=1e-4)
    varying = raw[1:].std(0) > 1e-8
    assert np.allclose(text[1:, varying].std(0), 1, atol=1e-3)


def test_cold_items_get_no_gradient_from_the_dense_loss(prepared):
    _, model, train_data, _ = prepared
    cold = model.cold_items
    assert len(cold) > 0
    batch = next(iter(train_data))
    assert not torch.isin(batch[model.POS_ITEM_ID], cold).any()  # training targets are never cold
    model.train()
    text = model.item_text
    try:
        model.item_text = text.clone().requires_grad_()  # every item's row of the dense catalogue
        torch.manual_seed(0)
        model.dense_loss(batch, model.encode(batch)[2]).backward()
        grad = model.item_text.grad
        trained = torch.ones(len(grad), dtype=torch.bool)
        trained[cold], trained[0] = False, False
        assert torch.all(grad[cold] == 0) and torch.all(grad[0] == 0)
        assert (grad[trained].abs().sum(1) > 0).float().mean() > 0.9  # the training items do get gradient
        model.zero_grad()
        model.item_text.grad = None
        model.dense_mask_cold = False  # without the mask the cold rows are negatives and get gradient
        torch.manual_seed(0)
        model.dense_loss(batch, model.encode(batch)[2]).backward()
        assert (model.item_text.grad[cold].abs().sum(1) > 0).all()
    finally:
        model.item_text, model.dense_mask_cold = text, True
        model.zero_grad()
        model.eval()


def test_beam_of_100_keeps_20_candidates(tiny, prepared):
    config, _, model, _, _, test_data = prepare_run("LIGER", "tiny-beauty", None,
                                                    tiny(**{**TINY_LIGER, "beam_size": 100}))
    assert config["beam_size"] == 100 and model.candidates == 20
    model.eval()
    interaction = next(iter(test_data))[0]
    calls = []
    search = model.beam_search

    def recording(encoded, k):
        output = search(encoded, k)
        calls.append((model.beam_size, k, output.items.shape[1]))
        return output

    model.beam_search = recording
    try:
        with torch.no_grad():
            encoded = model.encode(interaction)
            candidates = model.candidate_items(encoded)
            items, _ = model.generate_topk(interaction, 10)
    finally:
        del model.beam_search
    assert calls[0] == (100, 20, 100) and candidates.shape == (len(interaction), 20)
    with torch.no_grad():
        full = model.beam_search(encoded, 20).items
    assert torch.equal(candidates, full[:, :20])  # the beam's best 20 items, in order, out of 100 beams
    allowed_cold = set(model.cold_items.tolist())
    for user in range(len(items)):
        ranked = set(items[user].tolist()) - {-1}
        assert ranked <= allowed_cold | set(candidates[user].tolist())
    # fewer beams than candidates (the fixture's beam of 10): the whole beam
    assert prepared[1].beam_size == 10 and prepared[1].candidates == 10


def test_selection_ranking_is_dense_retrieval_and_history_matters(prepared):
    _, model, train_data, test_data = prepared
    model.eval()
    interaction = next(iter(test_data))[0]
    with torch.no_grad():
        items, scores = model.selection_topk(interaction, 10)
        dense = model.dense_logits(interaction, model.encode(interaction)[2])
        hybrid, _ = model.generate_topk(interaction, 10)
    assert torch.equal(items, dense.topk(10, dim=1).indices)
    assert not torch.equal(items[0], items[1]) or not torch.equal(items[1], items[2])
    assert not torch.equal(hybrid[0], hybrid[1]) or not torch.equal(hybrid[1], hybrid[2])


def test_checkpoints_are_selected_on_dense_in_set_validation(tiny):
    """The trainer validates with the model's `selection_topk` (LIGER: dense retrieval) and `valid_metric:
    inset_ndcg@10` reads the in-set users' NDCG@10; the test split is ranked by `generate_topk` (the hybrid)."""
    from recbole_genrec.registry import get_trainer

    config, _, model, _, valid_data, test_data = prepare_run("LIGER", "tiny-beauty", None, tiny(**TINY_LIGER))
    assert config["valid_metric"] == "inset_ndcg@10" and config["liger_valid_inference"] == "dense"
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    calls = []
    for name in ("selection_topk", "generate_topk"):
        original = getattr(model, name)
        setattr(model, name, lambda *args, _name=name, _original=original: calls.append(_name) or _original(*args))
    score, result = trainer._valid_epoch(valid_data)
    assert set(calls) == {"selection_topk"} and score == result["inset_ndcg@10"]
    assert 0 < trainer.last_cold_start["inset_users"] <= len(valid_data.dataset)
    calls.clear()
    test_result = trainer.evaluate(test_data, load_best_model=False)
    assert set(calls) == {"generate_topk"} and "inset_ndcg@10" not in test_result


def test_subset_valid_metrics_are_checked(tiny):
    GenRecConfig(model="LIGER", dataset="tiny-beauty", config_dict=tiny(valid_metric="cold_recall@10"))
    with pytest.raises(ValueError, match="needs cold_start_eval: True"):
        GenRecConfig(model="LIGER", dataset="tiny-beauty", config_dict=tiny(cold_start_eval=False))
    with pytest.raises(ValueError, match="valid_metric 'inset_hit@10' is not computed"):
        GenRecConfig(model="LIGER", dataset="tiny-beauty", config_dict=tiny(valid_metric="inset_hit@10"))
