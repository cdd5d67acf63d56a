"""Candidate sets: re-ranking by a dense score (LIGER: the candidates of a generative decoder, united with items
that must always be considered, such as cold-start items, which beams almost never produce, ordered by another
score) and keeping one occurrence of each item in a merged list (RPG's graph steps, EAGER's two streams)."""
import torch


@torch.no_grad()
def rerank_candidates(candidates: torch.Tensor, extra_items: torch.Tensor, scores: torch.Tensor, k: int):
    """candidates long [B, C] (-1 = no item), extra_items long [M] added to every user's candidate set, scores
    float [B, N + 1] for every item (column 0 = padding, never returned).

    Returns (items long [B, k], their scores [B, k]), best first; -1 / -inf where fewer than k candidates exist.
    Works on a [B, N + 1] mask on the device (a candidate set is a boolean row), so no per-user Python."""
    # a missing candidate (-1) marks the padding column, which is cleared last: no boolean indexing, no host sync
    allowed = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, candidates.clamp(min=0), True)
    allowed[:, extra_items] = True
    allowed[:, 0] = False
    masked = scores.float().masked_fill(~allowed, float("-inf"))
    top_scores, items = masked.topk(min(k, masked.shape[1]), dim=1)
    items = items.masked_fill(~torch.isfinite(top_scores), -1)
    if items.shape[1] < k:
        pad = k - items.shape[1]
        items = torch.cat([items, items.new_full((len(items), pad), -1)], dim=1)
        top_scores = torch.cat([top_scores, top_scores.new_full((len(items), pad), float("-inf"))], dim=1)
    return items, top_scores


def mask_duplicates(candidates: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """candidates long [B, C], scores [B, C] -> scores with -inf for every repeat of an item within a row; the
    occurrence with the highest score keeps it (RPG's graph steps, EAGER's union of two streams)."""
    by_score = scores.argsort(dim=1, descending=True)
    ordered, within = candidates.gather(1, by_score).sort(dim=1, stable=True)
    order = by_score.gather(1, within)
    repeat = torch.zeros_like(ordered, dtype=torch.bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    duplicate = torch.zeros_like(repeat).scatter_(1, order, repeat)
    return scores.masked_fill(duplicate, -float("inf"))


def top_candidates(candidates: torch.Tensor, scores: torch.Tensor, k: int):
    """The k best of each row's candidates [B, C] by `scores` [B, C] (-inf = not a candidate) -> (items [B, k'],
    scores [B, k']) with k' = min(k, C), best first; -1 where a row has fewer candidates."""
    top_scores, index = scores.topk(min(k, scores.shape[1]), dim=1)
    return candidates.gather(1, index).masked_fill(torch.isinf(top_scores), -1), top_scores
