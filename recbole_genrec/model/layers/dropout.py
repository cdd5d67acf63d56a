"""Dropout with a cheaper mask on a CPU, and the attention that uses it while training.

On a CPU, drawing dropout's Bernoulli mask (`aten::bernoulli_`) was the largest single cost of a training step at the
CPU sizes (a quarter of the time of a 1+1-layer d64 encoder-decoder step, in ours and in HF's T5 alike;
benchmarks/profile_step.py). Here the mask is one uniform 16-bit integer per element compared with a threshold, which
costs a fraction of that. The drop probability is p rounded to a multiple of 1/65536 (0.1 -> 0.100006) and the kept
values are scaled by the exact inverse of the keep probability, so the expectation is unchanged. Elsewhere (CUDA)
and in evaluation nothing changes: torch's own dropout, and `scaled_dot_product_attention`'s fused kernels.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16  # values of one int16 draw


class _MaskedScale(torch.autograd.Function):
    """x -> where(keep, x, 0) * scale; the backward applies the same mask (stored as bool, as torch's dropout)."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x, 0.0).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0).mul_(ctx.scale), None, None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """F.dropout(x, p, training), with the 16-bit integer mask on a CPU."""
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    dropped_levels = round(p * _LEVELS)
    draws = torch.empty(x.shape, dtype=torch.int16, device=x.device).random_(-(_LEVELS // 2), _LEVELS // 2)
    keep = draws >= dropped_levels - _LEVELS // 2
    return _MaskedScale.apply(x, keep, _LEVELS / (_LEVELS - dropped_levels))


class Dropout(nn.Dropout):
    """nn.Dropout (same `p`, same state dict: none) with `dropout`'s CPU mask."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor = None, dropout_p: float = 0.0,
              training: bool = False, scale: float = None) -> Tensor:
    """F.scaled_dot_product_attention; on a CPU while training with attention dropout, the same function written
    out (softmax in float32, as HF's T5) so that the weights' dropout uses `dropout`'s mask. `mask` (broadcastable
    to [N, H, Tq, Tk]) is additive (float) or says which keys a query may attend to (bool, True = allowed)."""
    if not training or dropout_p <= 0.0 or query.device.type != "cpu":
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask,
                                              dropout_p=dropout_p if training else 0.0, scale=scale)
    scores = query @ key.transpose(-1, -2)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    if scale != 1.0:
        scores = scores * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool \
            else scores + mask
    weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    return dropout(weights, dropout_p, True) @ value
