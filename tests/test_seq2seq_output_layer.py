"""The encoder-decoder's output layer as a recipe setting: T5's tied table with one softmax over the vocabulary, or
an untied head with one softmax per level (what per-level heads compute, as cornac's TIGER: TIGER's default, with
cornac's initialisation of the head and the start vector)."""
import torch
import torch.nn.functional as F

from conftest import TINY_TIGER
from recbole_genrec.quick_start import prepare_run


def test_level_softmax_loss_is_per_level_cross_entropy_and_the_head_is_untied(tiny):
    config, _, model, train_data, _, _ = prepare_run(
        "TIGER", "tiny-beauty", None, tiny(**TINY_TIGER, sid_softmax="level", tie_embeddings=False))
    assert model.level_softmax and model.backbone.lm_head is not None and not model.backbone.tie_embeddings
    model.eval()  # no dropout: the two computations see the same logits
    batch = next(iter(train_data))
    target = model.target_tokens(batch)
    logits = model.sequence_logits(batch, target).float()
    expected = []
    for level in range(model.vocab.num_levels):
        tokens = model.vocab.level_range(level)
        expected.append(F.cross_entropy(logits[:, level, tokens.start:tokens.stop], target[:, level] - tokens.start,
                                        reduction="none"))
    torch.testing.assert_close(model.calculate_loss(batch), torch.stack(expected, 1).mean())


def test_tiger_defaults_to_cornacs_output_layer_and_initialisation(tiny):
    _, _, model, _, _, _ = prepare_run("TIGER", "tiny-beauty", None, tiny(**{**TINY_TIGER, "d_model": 256}))
    backbone = model.backbone
    assert model.level_softmax and not backbone.tie_embeddings and backbone.lm_head is not None
    # nn.Linear's default (uniform, std (3 d)^-0.5 = 0.036 at d 256), not T5 v1.1's std 1.0; the start row at 0.02
    assert abs(backbone.lm_head.weight.std().item() - (3 * 256) ** -0.5) < 0.005
    assert backbone.embedding.weight[0].std().item() < 0.03 < 0.8 < backbone.embedding.weight[1:].std().item()


def test_vocabulary_softmax_and_t5_initialisation_on_request(tiny):
    _, _, model, _, _, _ = prepare_run("TIGER", "tiny-beauty", None, tiny(
        **TINY_TIGER, tie_embeddings=True, sid_softmax="vocabulary", decoder_start_init_std=None))
    assert not model.level_softmax and model.backbone.tie_embeddings and model.backbone.lm_head is None
    assert model.backbone.embedding.weight[0].std().item() > 0.5
