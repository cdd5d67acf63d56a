"""Scaled dot-product attention and dropout, written for the sizes generative recommenders run at on a CPU.

- Dropout: on a CPU, drawing the Bernoulli mask (`aten::bernoulli_`) was the largest single cost of a training step
  at the CPU sizes (a quarter of a 1+1-layer d64 encoder-decoder step, in ours and in HF's T5 alike;
  benchmarks/profile_step.py). Here each element gets a uniform 16-bit integer, carved four at a time from 64-bit
  draws (torch's CPU generator fills a 64-bit word about as fast as a 16-bit one: 5x fewer draws than one per
  element), compared with a threshold into a float mask of 0 and 1 / (1 - p) that the input is multiplied by (one
  pass forward, one backward). The drop probability is p rounded to a multiple of 1/65536 (0.1 -> 0.100006) and
  the kept values are scaled by the exact inverse of the keep probability, so the expectation is unchanged.
- Attention: sdpa, except (a) on a CPU while training with attention dropout, written out so that the weights use
  that mask, and (b) for one query position (an incremental decoding step: beams x users rows, a few keys each),
  where elementwise products beat sdpa's kernel, whose per-(row, head) overhead dominates at that shape.
On CUDA, dropout and training attention are torch's own (fused kernels).
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16  # values of one int16 draw


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """F.dropout(x, p, training), with the 16-bit integer mask on a CPU."""
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    dropped_levels = round(p * _LEVELS)
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-(1 << 63), None)
    draws = words.view(torch.int16)[: x.numel()].view(x.shape)
    scale = torch.tensor(_LEVELS / (_LEVELS - dropped_levels), dtype=x.dtype)
    mask = torch.where(draws >= dropped_levels - _LEVELS // 2, scale, torch.zeros((), dtype=x.dtype))
    return x * mask  # autograd keeps the mask (not x) for the backward pass


class Dropout(nn.Dropout):
    """nn.Dropout (same `p`, same state dict: none) with `dropout`'s CPU mask."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor = None, dropout_p: float = 0.0,
              training: bool = False, scale: float = None) -> Tensor:
    """F.scaled_dot_product_attention(query [N, H, Tq, d], key/value [N, H, Tk, d], mask, dropout_p, scale) with the
    two written-out cases of the module docstring (softmax in float32 there, as HF's T5). `mask` (broadcastable to
    [N, H, Tq, Tk]) is additive (float) or says which keys a query may attend to (bool, True = allowed)."""
    dropping = training and dropout_p > 0.0
    single_query = query.shape[-2] == 1 and not dropping
    if not single_query and (not dropping or query.device.type != "cpu"):
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask,
                                              dropout_p=dropout_p if dropping else 0.0, scale=scale)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    if single_query:
        scores = (query * key).sum(-1).unsqueeze(-2)  # [N, H, 1, Tk]
    else:
        scores = query @ key.transpose(-1, -2)
    if scale != 1.0:
        scores = scores * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool \
            else scores + mask
    weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    if single_query:
        return (weights.transpose(-1, -2) * value).sum(-2, keepdim=True)
    return dropout(weights, dropout_p, True) @ value
