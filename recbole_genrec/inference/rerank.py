"""Candidate sets: re-ranking by a dense score (LIGER: the candidates of a generative decoder, united with items
that must always be considered, such as cold-start items, which beams almost never produce, ordered by another
score) and keeping one occurrence of each item in a merged list (RPG's graph steps, EAGER's two streams)."""
import torch


@torch.no_grad()
def rerank_scored_candidates(candidates: torch.Tensor, candidate_scores: torch.Tensor, extra_items: torch.Tensor,
                             extra_scores: torch.Tensor, k: int):
    """candidates long [B, C] (-1 = no item) with their scores [B, C], extra_items long [M] added to every user's
    candidate set with their scores [B, M] (column j: item extra_items[j]).

    Returns (items long [B, k], their scores float [B, k]), best first, each item once, equal scores in ascending
    item order; -1 / -inf where fewer than k candidates exist. Works on the C + M candidates alone (two sorts of a
    [B, C + M] row): the cost per user does not depend on the catalogue, only on C and M."""
    extra = extra_items.to(candidates.device, candidates.dtype).expand(len(candidates), -1)
    items = torch.cat([candidates, extra], dim=1)
    scores = torch.cat([candidate_scores.float(), extra_scores.float().to(candidate_scores.device)], dim=1)
    items, by_item = items.sort(dim=1, stable=True)  # repeats of an item side by side, ascending item ids
    scores = scores.gather(1, by_item)
    drop = items <= 0  # no item (-1) or the padding item
    drop[:, 1:] |= items[:, 1:] == items[:, :-1]
    scores = scores.masked_fill(drop, float("-inf"))
    scores, by_score = scores.sort(dim=1, descending=True, stable=True)  # stable: ties keep ascending item ids
    keep = min(k, scores.shape[1])
    top_scores, items = scores[:, :keep], items.gather(1, by_score[:, :keep])
    items = items.masked_fill(~torch.isfinite(top_scores), -1)
    if keep < k:
        pad = k - keep
        items = torch.cat([items, items.new_full((len(items), pad), -1)], dim=1)
        top_scores = torch.cat([top_scores, top_scores.new_full((len(items), pad), float("-inf"))], dim=1)
    return items, top_scores


@torch.no_grad()
def rerank_candidates(candidates: torch.Tensor, extra_items: torch.Tensor, scores: torch.Tensor, k: int):
    """candidates long [B, C] (-1 = no item), extra_items long [M] added to every user's candidate set, scores
    float [B, N + 1] for every item (column 0 = padding, never returned).

    Returns (items long [B, k], their scores [B, k]), best first; -1 / -inf where fewer than k candidates exist.
    The candidates' scores are read from the table (`rerank_scored_candidates`); a caller that can score the
    candidates alone (LIGER) passes their scores there and never builds the [B, N + 1] table."""
    scores = scores.float()
    extra_items = extra_items.to(scores.device)
    return rerank_scored_candidates(candidates, scores.gather(1, candidates.clamp(min=0)), extra_items,
                                    scores[:, extra_items], k)


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
