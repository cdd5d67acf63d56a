"""How good a set of semantic IDs is: collisions, per-level codebook usage and perplexity, prefix concentration.

Codebook collapse (most items on a few codes) is the classic silent failure of RQ-VAE tokenizers; these figures
are logged with every fit and stored with the IDs, and `collapse_warning` names the bad cases (a run stops on them
unless `sid_collapse: warn`)."""
import math

import numpy as np
import torch

# Thresholds of `collapse_warning`.
MAX_PREFIX2_SHARE = 0.5  # more than half of the items under one 2-code prefix
MIN_FIRST_LEVEL_USAGE = 0.1  # fewer than 10% of the usable first-level codes in use
MAX_COLLISION_RATE = 0.5  # more than half of the items share their full ID with another item, and at least
COLLISION_VS_RANDOM = 1.5  # 1.5x the rate of uniformly random codes (a codebook too small to hold the catalogue
#                            collides without having collapsed)


def _group_sizes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(size of each distinct row, for every row the size of its group)."""
    _, inverse, counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    return counts, counts[inverse.reshape(-1)]


def sid_quality(codes, vocab_sizes) -> dict:
    """Quality figures of `codes` [n_items, L] (items only, no padding row), JSON-serialisable.

    n_items, n_unique_ids; collision_rate = fraction of items whose full code is shared with another item;
    max_items_per_id; per level (lists of length L): n_used codes, usage = n_used / vocab size, perplexity =
    exp(entropy of the level's code distribution over items); prefix2_max_share = largest fraction of items
    sharing their first two codes (only when L >= 2)."""
    codes = codes.cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    if codes.ndim != 2 or len(codes) == 0:
        raise ValueError(f"sid_quality expects codes [n_items > 0, L], got shape {codes.shape}")
    n_items, n_levels = codes.shape
    if len(vocab_sizes) != n_levels:
        raise ValueError(f"{len(vocab_sizes)} vocabulary sizes for {n_levels} code levels")
    id_sizes, item_group_sizes = _group_sizes(codes)
    quality = {
        "n_items": int(n_items),
        "n_unique_ids": int(len(id_sizes)),
        "collision_rate": float((item_group_sizes > 1).mean()),
        "max_items_per_id": int(id_sizes.max()),
        "n_levels": int(n_levels),
        "vocab_sizes": [int(size) for size in vocab_sizes],
        "n_used": [],
        "usage": [],
        "perplexity": [],
    }
    for level in range(n_levels):
        counts = np.unique(codes[:, level], return_counts=True)[1]
        probabilities = counts / n_items
        entropy = float(-(probabilities * np.log(probabilities)).sum())
        quality["n_used"].append(int(len(counts)))
        quality["usage"].append(float(len(counts) / max(int(vocab_sizes[level]), 1)))
        quality["perplexity"].append(float(math.exp(entropy)))
    if n_levels >= 2:
        prefix_sizes, _ = _group_sizes(codes[:, :2])
        quality["prefix2_max_share"] = float(prefix_sizes.max() / n_items)
    return quality


def prefix_cf_agreement(codes, collaborative, max_depth: int = 3) -> dict:
    """How well shared ID prefixes agree with collaborative similarity (LETTER's motivation).

    For items with a CF vector (non-zero rows of `collaborative` [n_items, d]), the mean cosine similarity of the CF
    vectors of item pairs that share their first l codes, for l = 1..max_depth (`same_prefix1`, ...), next to the
    mean over all pairs (`all_pairs`). A tokenizer whose prefixes follow collaborative structure has
    `same_prefix_l` well above `all_pairs`. Pair means are computed from per-group vector sums, O(n d)."""
    codes = codes.cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    vectors = np.asarray(collaborative, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    known = norms > 0
    unit, codes = vectors[known] / norms[known, None], codes[known]

    def mean_pair_cosine(groups):
        sums = np.zeros((groups.max() + 1, unit.shape[1]))
        np.add.at(sums, groups, unit)
        sizes = np.bincount(groups)
        pairs = float((sizes * (sizes - 1)).sum())
        return float(((sums ** 2).sum() - len(unit)) / pairs) if pairs else float("nan")

    result = {"n_items_with_cf": int(known.sum())}
    if len(unit) < 2:
        return result
    result["all_pairs"] = mean_pair_cosine(np.zeros(len(unit), dtype=np.int64))
    for depth in range(1, min(max_depth, codes.shape[1]) + 1):
        groups = np.unique(codes[:, :depth], axis=0, return_inverse=True)[1].reshape(-1)
        result[f"same_prefix{depth}"] = mean_pair_cosine(groups)
    return result


def collapse_warning(quality: dict) -> str | None:
    """A warning message when the codes look collapsed, naming the figure and what to try; None when healthy.

    First-level usage is measured against the codes a catalogue can use at all (min(vocab size, n_items)), so a
    catalogue smaller than the codebook is not flagged for that reason alone."""
    problems = []
    prefix_share = quality.get("prefix2_max_share")
    if prefix_share is not None and prefix_share > MAX_PREFIX2_SHARE:
        problems.append(f"{prefix_share:.0%} of the items share their first two codes")
    usable_first_codes = min(quality["vocab_sizes"][0], quality["n_items"])
    first_usage = quality["n_used"][0] / max(usable_first_codes, 1)
    if first_usage < MIN_FIRST_LEVEL_USAGE:
        problems.append(
            f"first-level usage is {first_usage:.1%} ({quality['n_used'][0]} of {usable_first_codes} usable codes)"
        )
    capacity = math.prod(quality["vocab_sizes"])
    random_rate = 1.0 - (1.0 - 1.0 / capacity) ** (quality["n_items"] - 1)
    if quality["collision_rate"] > max(MAX_COLLISION_RATE, COLLISION_VS_RANDOM * random_rate):
        problems.append(f"{quality['collision_rate']:.0%} of the items collide on their full code")
    if not problems:
        return None
    return (
        "Semantic IDs look collapsed: " + "; ".join(problems) + ". Try more tokenizer epochs, dead_code_reset: True "
        "with k-means initialisation and standardised inputs, or the RQKMeans tokenizer (residual k-means, which "
        "cannot collapse this way)."
    )


def format_quality(quality: dict) -> str:
    """One readable paragraph for the log."""
    levels = range(quality["n_levels"])
    usage = "/".join(f"{quality['usage'][level]:.0%}" for level in levels)
    perplexity = "/".join(f"{quality['perplexity'][level]:.1f}" for level in levels)
    vocab = "x".join(str(size) for size in quality["vocab_sizes"])
    text = (
        f"Semantic ID quality ({quality['n_items']} items, {quality['n_levels']} levels of {vocab} codes): "
        f"{quality['n_unique_ids']} distinct IDs, collision rate {quality['collision_rate']:.2%}, "
        f"at most {quality['max_items_per_id']} items per ID; per-level usage {usage}, perplexity {perplexity}"
    )
    if "prefix2_max_share" in quality:
        text += f"; the largest 2-code prefix holds {quality['prefix2_max_share']:.1%} of the items"
    agreement = quality.get("prefix_cf_agreement") or {}
    if "all_pairs" in agreement:
        same = ", ".join(f"{agreement[k]:.3f} (prefix {k[len('same_prefix'):]})" for k in agreement
                         if k.startswith("same_prefix"))
        text += f"; CF cosine of items sharing a prefix {same} vs {agreement['all_pairs']:.3f} for all pairs"
    if "collision_policy" in quality:
        text += (
            f". After the collision policy '{quality['collision_policy']}': {quality['n_unique_ids_after_policy']} "
            f"distinct IDs (collision rate {quality['collision_rate_after_policy']:.2%}), "
            f"vocabulary sizes {quality['vocab_sizes_after_policy']}"
        )
    return text + "."
