"""The CPU dropout mask and the written-out attention (model/layers/attention.py): the probability asked for, the
expectation kept, the backward masked like the forward; the written-out attention (CPU training, one query position)
equal to torch's sdpa."""
import pytest
import torch
import torch.nn.functional as F

from recbole_genrec.model.layers import Dropout, attention, dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_one_minus_p_and_the_expectation(p):
    torch.manual_seed(0)
    x = torch.full((1_000_000,), 2.0)
    out = dropout(x, p, training=True)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 3e-3  # 1e6 draws: std of the rate is < 5e-4
    # Four 16-bit draws come from each 64-bit word: each of the four positions is uniform on its own.
    for position_rate in kept.view(-1, 4).float().mean(0).tolist():
        assert abs(position_rate - (1 - p)) < 5e-3
    assert torch.allclose(out[kept], torch.tensor(2.0 / (1 - p)), rtol=1e-4)  # p on a 1/65536 grid
    assert abs(out.mean().item() - 2.0) < 0.02


def test_dropout_backward_uses_the_forward_mask():
    torch.manual_seed(1)
    x = torch.rand(64, 33) + 0.5  # no zeros: a zero output means a dropped element
    x.requires_grad_(True)
    out = dropout(x, 0.3, training=True)
    out.backward(torch.ones_like(out))
    scale = 65536 / (65536 - round(0.3 * 65536))
    kept = out != 0
    assert 0 < kept.sum() < kept.numel()
    assert torch.equal(x.grad, kept.float() * torch.tensor(scale, dtype=torch.float32))


def test_dropout_is_the_identity_in_evaluation_and_at_zero():
    x = torch.randn(8, 8)
    module = Dropout(0.5).eval()
    assert module(x) is x and dropout(x, 0.0, training=True) is x and module.p == 0.5
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))


def test_dropout_is_reproducible_under_a_seed():
    x = torch.randn(100, 100)
    torch.manual_seed(7)
    first = dropout(x, 0.1)
    torch.manual_seed(7)
    assert torch.equal(first, dropout(x, 0.1))


@pytest.mark.parametrize("mask_kind", ["none", "additive", "bool"])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_training_attention_written_out_equals_sdpa(mask_kind, scale):
    """With a drop probability that rounds to zero the training path keeps every weight: it must then compute
    sdpa's function exactly (additive and boolean masks, default and unit scale)."""
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    mask = None
    if mask_kind != "none":
        allowed = torch.rand(2, 1, 5, 5) > 0.3
        allowed[..., 0] = True  # no fully masked row
        mask = allowed if mask_kind == "bool" else torch.zeros(2, 1, 5, 5).masked_fill(~allowed, -1e9)
    written_out = attention(q, k, v, mask, dropout_p=1e-9, training=True, scale=scale)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    assert torch.allclose(written_out, reference, atol=1e-6)


def test_training_attention_drops_weights():
    torch.manual_seed(4)
    q, k = torch.randn(1, 1, 4, 8), torch.randn(1, 1, 6, 8)
    v = torch.eye(6)[None, None]  # the output rows are the (dropped, rescaled) attention weights themselves
    weights = attention(q, k, v, None, dropout_p=0.5, training=True)
    full = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1)
    kept = weights != 0
    assert 0 < kept.sum() < kept.numel()
    assert torch.allclose(weights[kept], full[kept] * 65536 / 32768, atol=1e-6)


@pytest.mark.parametrize("mask_kind", ["none", "additive", "bool"])
@pytest.mark.parametrize("keys", [1, 4, 50])
def test_one_query_attention_equals_sdpa(mask_kind, keys):
    """The decoding step's shape (one query position per row) takes the elementwise path: same function as sdpa."""
    torch.manual_seed(5)
    q, k, v = torch.randn(30, 4, 1, 16), torch.randn(30, 4, keys, 16), torch.randn(30, 4, keys, 16)
    mask = None
    if mask_kind != "none":
        allowed = torch.rand(30, 1, 1, keys) > 0.3
        allowed[..., 0] = True
        mask = allowed if mask_kind == "bool" else torch.randn(1, 4, 1, keys).masked_fill(~allowed, -1e9)
    for scale in (None, 1.0):
        reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        assert torch.allclose(attention(q, k, v, mask, scale=scale), reference, atol=1e-5)
