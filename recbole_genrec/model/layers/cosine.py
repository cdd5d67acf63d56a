"""Cosine-similarity logits with a temperature (RPG's digit heads, LIGER's dense head, EAGER's contrastive task)."""
import torch
import torch.nn.functional as F


def unit_rows(vectors):
    """`vectors` L2-normalised along the last dimension, in float32 with autocast off: the keys `cosine_logits`
    normalises, computed once where the same keys serve many queries (LIGER's catalogue in evaluation)."""
    with torch.autocast(vectors.device.type, enabled=False):
        return F.normalize(vectors.float(), dim=-1)


def cosine_logits(queries, keys, temperature, equation="bd,nd->bn", keys_normalized=False):
    """einsum(`equation`) of the L2-normalised `queries` and `keys`, divided by `temperature`, in float32 with
    autocast off: temperatures of 0.03-0.07 stretch cosines to +-33, where bf16 rounds in steps of 0.125-0.25.
    `keys_normalized`: the keys are `unit_rows`' output already (the same values as normalising them here)."""
    with torch.autocast(queries.device.type, enabled=False):
        queries = F.normalize(queries.float(), dim=-1)
        keys = keys.float() if keys_normalized else F.normalize(keys.float(), dim=-1)
        return torch.einsum(equation, queries, keys) / temperature
