"""EncoderDecoder <-> Hugging Face T5ForConditionalGeneration: same logits both ways, exact round trip, and our
constrained beam search == HF `generate` with a prefix trie."""
import itertools
from collections import defaultdict

import pytest
import torch

transformers = pytest.importorskip("transformers")

from recbole_genrec.inference import PrefixConstraints, SemanticIdVocab, generate_items  # noqa: E402
from recbole_genrec.model.layers import EncoderDecoder  # noqa: E402
from recbole_genrec.model.layers.hf_t5 import from_hf_t5, to_hf_t5  # noqa: E402

VOCAB = 40  # 2 special + 15 semantic-ID tokens + 23 other tokens (e.g. user tokens), all in the softmax
SIZES = dict(d_model=16, num_heads=2, d_kv=8, d_ff=32)
LEVEL_SIZES = [5, 5, 5]
N_ITEMS = 40
TOPK = 5


def randomize_norms(model, seed):
    """Norm weights start at 1 on both sides; random ones make a misrouted norm show in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)


def our_model():
    torch.manual_seed(0)
    model = EncoderDecoder(VOCAB, **SIZES, num_encoder_layers=2, num_decoder_layers=2).eval()
    randomize_norms(model, seed=1)
    return model


def hf_config(**overrides):
    params = dict(vocab_size=VOCAB, d_model=16, num_heads=2, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2,
                  feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0, pad_token_id=0,
                  eos_token_id=None)
    params.update(overrides)
    return transformers.T5Config(**params)


def hf_model():
    torch.manual_seed(2)
    model = transformers.T5ForConditionalGeneration(hf_config()).eval()
    randomize_norms(model, seed=3)
    return model


def encoder_batch(batch=4, length=9, seed=4):
    """Random tokens, right-padded to `length` (one full row, one single-token row)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (batch, length), generator=generator)
    mask = torch.arange(length)[None, :] < torch.tensor([length, 3, 6, 1][:batch])[:, None]
    return input_ids.masked_fill(~mask, 0), mask


def decoder_inputs(batch=4, length=5, seed=5):
    tokens = torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
    tokens[:, 0] = 0  # the decoder start token
    return tokens


@torch.no_grad()
def max_logit_difference(ours, hf):
    input_ids, mask = encoder_batch()
    decoder_input_ids = decoder_inputs()
    our_logits = ours(input_ids, mask, decoder_input_ids)
    hf_logits = hf(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids).logits
    assert our_logits.shape == hf_logits.shape == (4, 5, VOCAB)
    return (our_logits - hf_logits).abs().max().item()


def test_ours_to_hf_same_logits():
    ours = our_model()
    assert max_logit_difference(ours, to_hf_t5(ours)) <= 1e-5


def test_hf_to_ours_same_logits():
    hf = hf_model()
    assert max_logit_difference(from_hf_t5(hf), hf) <= 1e-5


def assert_same_state(first, second):
    first, second = first.state_dict(), second.state_dict()
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


def test_round_trips_are_exact():
    ours = our_model()
    hf = to_hf_t5(ours)
    assert not hf.training
    assert_same_state(from_hf_t5(hf), ours)
    hf = hf_model()
    assert_same_state(to_hf_t5(from_hf_t5(hf)), hf)


@pytest.mark.parametrize("overrides", [
    dict(feed_forward_proj="gated-gelu"),
    dict(tie_word_embeddings=False),  # T5 v1.1: no d_model**-0.5 on the output projection
    dict(relative_attention_num_buckets=64),
    dict(relative_attention_max_distance=256),
    dict(layer_norm_epsilon=1e-5),
    dict(decoder_start_token_id=1),
])
def test_unrepresentable_t5_is_refused(overrides):
    hf = transformers.T5ForConditionalGeneration(hf_config(**overrides))
    with pytest.raises(ValueError, match="cannot represent"):
        from_hf_t5(hf)


def test_untied_hf_output_projection_is_refused():
    hf = hf_model()
    hf.lm_head.weight = torch.nn.Parameter(hf.shared.weight.detach().clone())
    with pytest.raises(ValueError, match="lm_head is not tied"):
        from_hf_t5(hf)


@pytest.mark.parametrize("overrides", [dict(tie_embeddings=False), dict(num_encoder_layers=0)])
def test_unrepresentable_backbone_is_refused(overrides):
    params = dict(SIZES, num_encoder_layers=1, num_decoder_layers=1)
    params.update(overrides)
    with pytest.raises(ValueError, match="to_hf_t5"):
        to_hf_t5(EncoderDecoder(VOCAB, **params))


def catalogue_codes():
    """codes [N_ITEMS + 1, 3], distinct, row 0 = the padding item."""
    space = torch.tensor(list(itertools.product(*(range(size) for size in LEVEL_SIZES))))
    chosen = space[torch.randperm(len(space), generator=torch.Generator().manual_seed(6))[:N_ITEMS]]
    return torch.cat([torch.zeros(1, len(LEVEL_SIZES), dtype=torch.long), chosen])


def prefix_trie(item_tokens):
    """HF's prefix_allowed_tokens_fn over the catalogue's token sequences [n, L]. An unknown prefix raises
    KeyError: HF must never extend a beam outside the catalogue."""
    allowed = defaultdict(set)
    for tokens in item_tokens.tolist():
        for level, token in enumerate(tokens):
            allowed[tuple(tokens[:level])].add(token)
    allowed = {prefix: sorted(tokens) for prefix, tokens in allowed.items()}

    def allowed_tokens(batch_id, sequence):
        return allowed[tuple(sequence[1:].tolist())]  # sequence[0] is the decoder start token

    return allowed_tokens


@pytest.mark.parametrize("beam_multiple", [1, 2])
def test_constrained_beam_search_equals_hf_generate(beam_multiple):
    vocab = SemanticIdVocab(LEVEL_SIZES)
    codes = catalogue_codes()
    catalogue = PrefixConstraints(codes, LEVEL_SIZES)
    ours = our_model()
    hf = to_hf_t5(ours)
    input_ids, mask = encoder_batch()
    beam = beam_multiple * TOPK

    our_output = generate_items(ours, input_ids, mask, vocab, beam_size=beam, topk=TOPK, constraints=catalogue)
    our_items, our_scores = our_output.items[:, :TOPK], our_output.scores[:, :TOPK]

    with torch.no_grad():
        hf_output = hf.generate(
            input_ids, attention_mask=mask, num_beams=beam, num_return_sequences=TOPK,
            max_new_tokens=vocab.num_levels, length_penalty=0.0, early_stopping=False, do_sample=False,
            prefix_allowed_tokens_fn=prefix_trie(vocab.to_tokens(codes[1:])), output_scores=True,
            return_dict_in_generate=True)
    sequences = hf_output.sequences.view(len(input_ids), TOPK, -1)
    assert (sequences[:, :, 0] == 0).all()
    hf_items = catalogue.lookup_items(vocab.to_codes(sequences[:, :, 1:]))
    hf_scores = hf_output.sequences_scores.view(len(input_ids), TOPK)

    assert (our_items > 0).all() and (hf_items > 0).all()
    # length_penalty=0: HF's score is the plain sum of the per-level log-probabilities, as ours.
    assert (our_scores - hf_scores).abs().max().item() <= 1e-4
    # Two beams with exactly the same score may come out in either order; every other rank must agree.
    tied = torch.zeros_like(our_scores, dtype=torch.bool)
    ties_with_next = our_scores[:, 1:] == our_scores[:, :-1]
    tied[:, 1:] |= ties_with_next
    tied[:, :-1] |= ties_with_next
    assert torch.equal(our_items[~tied], hf_items[~tied])
