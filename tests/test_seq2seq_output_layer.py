"""The encoder-decoder's output layer as a recipe setting: T5's tied table with one softmax over the vocabulary
(default), or an untied head with one softmax per level (what per-level heads compute, as cornac's TIGER)."""
import torch
import torch.nn.functional as F

from conftest import TINY_TIGER
from recbole_genrec.quick_start import _prepare


def test_level_softmax_loss_is_per_level_cross_entropy_and_the_head_is_untied(tiny):
    config, _, model, train_data, _, _ = _prepare(
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


def test_vocabulary_softmax_is_the_default(tiny):
    _, _, model, _, _, _ = _prepare("TIGER", "tiny-beauty", None, tiny(**TINY_TIGER))
    assert not model.level_softmax and model.backbone.tie_embeddings and model.backbone.lm_head is None
