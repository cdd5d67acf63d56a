"""The T5-style encoder-decoder: shapes, masking, and cached incremental decoding == teacher forcing."""
import pytest
import torch

from recbole_genrec.model.layers import EncoderDecoder

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
VOCAB = 40


def small_model(device="cpu", **overrides):
    torch.manual_seed(0)
    params = dict(d_model=32, num_heads=2, d_kv=16, d_ff=64, num_encoder_layers=2, num_decoder_layers=2, dropout=0.1)
    params.update(overrides)
    return EncoderDecoder(VOCAB, **params).to(device).eval()


def random_batch(device, batch=4, length=9, decoder_length=5):
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(2, VOCAB, (batch, length), generator=generator)
    lengths = torch.tensor([length, 3, 6, 1][:batch])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    input_ids = input_ids.masked_fill(~mask, 0)
    decoder_input = torch.randint(2, VOCAB, (batch, decoder_length), generator=generator)
    decoder_input[:, 0] = 0  # start token
    return input_ids.to(device), mask.to(device), decoder_input.to(device)


@pytest.mark.parametrize("tie", [True, False])
def test_shapes(tie):
    model = small_model(tie_embeddings=tie)
    input_ids, mask, decoder_input = random_batch("cpu")
    memory = model.encode(input_ids, mask)
    assert memory.shape == (4, 9, 32)
    hidden = model.decode(decoder_input, memory, mask)
    assert hidden.shape == (4, 5, 32)
    assert model.lm_logits(hidden).shape == (4, 5, VOCAB)
    assert model(input_ids, mask, decoder_input).shape == (4, 5, VOCAB)
    extra = torch.randn(4, 9, 32)
    assert not torch.allclose(model.encode(input_ids, mask, extra), memory)
    assert (model.lm_head is None) == tie


def test_tiger_size_defaults():
    model = EncoderDecoder(1030)
    layer = model.encoder_layers[0]
    assert len(model.encoder_layers) == 4 and len(model.decoder_layers) == 4
    assert layer.attention.query.weight.shape == (6 * 64, 128) and layer.ffn.inner.weight.shape == (1024, 128)
    assert all(not name.endswith("bias") or "position_bias" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_incremental_decoding_equals_teacher_forcing(device):
    model = small_model(device)
    input_ids, mask, decoder_input = random_batch(device)
    with torch.no_grad():
        memory = model.encode(input_ids, mask)
        expected = model.lm_logits(model.decode(decoder_input, memory, mask))
        state = model.start_decoding(memory, mask)
        steps = []
        for t in range(decoder_input.shape[1]):
            logits, state = model.decode_step(decoder_input[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_incremental_decoding_with_several_rows_per_user(device):
    """Beam-style use: each user's state expanded to 3 rows, rows reordered within users between steps."""
    model = small_model(device)
    input_ids, mask, _ = random_batch(device)
    batch, rows, steps = input_ids.shape[0], 3, 4
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(2, VOCAB, (batch * rows, steps), generator=generator).to(device)
    tokens[:, 0] = 0
    with torch.no_grad():
        memory = model.encode(input_ids, mask)
        state = model.start_decoding(memory, mask).index_select(
            torch.arange(batch, device=device).repeat_interleave(rows))
        history = torch.arange(batch * rows, device=device)  # which original row each current row continues
        for t in range(steps):
            logits, state = model.decode_step(tokens[history, t], state)
            if t + 1 < steps:  # a within-user permutation, like beam reordering (row 0 of each user duplicated)
                parent = torch.tensor([0, 0, 1], device=device)
                index = (torch.arange(batch, device=device)[:, None] * rows + parent).view(-1)
                state, history = state.index_select(index), history[index]
        replayed = tokens[history]
        expected = model.lm_logits(model.decode(replayed, memory.repeat_interleave(rows, 0),
                                                mask.repeat_interleave(rows, 0)))[:, -1]
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_index_select_needs_whole_groups():
    model = small_model()
    input_ids, mask, _ = random_batch("cpu")
    state = model.start_decoding(model.encode(input_ids, mask), mask)
    with pytest.raises(ValueError):
        state.index_select(torch.arange(3))


@pytest.mark.parametrize("padding", ["right", "left"])
def test_padding_is_masked(padding):
    """Adding pad tokens changes neither the encoding of the real tokens nor the decoder's output."""
    model = small_model()
    generator = torch.Generator().manual_seed(3)
    content = torch.randint(2, VOCAB, (1, 5), generator=generator)
    pads = torch.zeros(1, 4, dtype=torch.long)
    padded = torch.cat([content, pads], 1) if padding == "right" else torch.cat([pads, content], 1)
    real = padded != 0
    decoder_input = torch.tensor([[0, 7, 9]])
    with torch.no_grad():
        plain_memory = model.encode(content, torch.ones_like(content, dtype=torch.bool))
        padded_memory = model.encode(padded, real)
        torch.testing.assert_close(padded_memory[real].view(1, 5, -1), plain_memory, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(padded, real, decoder_input),
                                   model(content, torch.ones_like(content, dtype=torch.bool), decoder_input),
                                   atol=1e-5, rtol=1e-5)


def test_dropout_only_in_training():
    model = small_model()
    input_ids, mask, decoder_input = random_batch("cpu")
    with torch.no_grad():
        assert torch.equal(model(input_ids, mask, decoder_input), model(input_ids, mask, decoder_input))
        model.train()
        assert not torch.equal(model(input_ids, mask, decoder_input), model(input_ids, mask, decoder_input))


def test_gradients_reach_every_parameter():
    model = small_model(tie_embeddings=False).train()
    input_ids, mask, decoder_input = random_batch("cpu")
    logits = model(input_ids, mask, decoder_input)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), decoder_input.flatten()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
