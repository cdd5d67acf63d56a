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


# `codebook_size: auto` (tokenizers with `codebook_size` and `num_levels`, or OPQ's `num_digits`): the smallest power of
# two, at least this, whose first L - 1 levels hold half the catalogue (K^(L-1) >= n_items / 2), so that the last
# level only has to split small groups. Measured with RQ-KMeans on MiniLM text (3 levels, collision rate before the
# collision digit): amazon-beauty (12,101 items) 82% at 32 codes, 56% at 64, 41% at 128 (what `auto` picks), 28% at
# 256; ml-100k (1,682 items) 41% at 32 (what `auto` picks), 28% at 64.
AUTO_CODEBOOK_SIZE = "auto"
AUTO_MIN_CODEBOOK_SIZE = 32
# Tokenizers whose codes are trained by gradient descent (an RQ-VAE): a collapse there is a training failure.
TRAINED_TOKENIZERS = ("RQVAE", "LETTER")


def auto_codebook_size(n_items: int, num_levels: int, minimum: int = AUTO_MIN_CODEBOOK_SIZE) -> int:
    """`codebook_size: auto` for `n_items` items and `num_levels` levels: the smallest power of two K >= `minimum`
    with K^(L-1) >= n_items / 2 (one level: K >= n_items / 2). ml-100k (1,682 items, 3 levels): 32;
    amazon-beauty (12,101): 128; with 4 levels both 32."""
    prefix_levels = max(int(num_levels) - 1, 1)
    size = max(1, int(minimum))
    size = 1 << (size - 1).bit_length()  # a power of two
    while 2 * size ** prefix_levels < n_items:
        size *= 2
    return size


def _levels_key(params: dict) -> str | None:
    return "num_levels" if "num_levels" in params else ("num_digits" if "num_digits" in params else None)


def resolve_auto_codebook_size(params: dict, n_items: int, default_params: dict | None = None) -> dict:
    """`params` with `codebook_size: auto` replaced by `auto_codebook_size` for this catalogue (a copy; `params`
    unchanged when it does not ask for `auto`). `default_params`: the tokenizer's defaults, for a `num_levels` the
    params do not set."""
    if not isinstance(params, dict) or params.get("codebook_size") != AUTO_CODEBOOK_SIZE:
        return params
    merged = {**(default_params or {}), **params}
    key = _levels_key(merged)
    if key is None:
        raise ValueError("codebook_size: auto sizes the codebooks from the number of items and of levels, but the "
                         "tokenizer has no num_levels (or num_digits): give codebook_size as a number.")
    return {**params, "codebook_size": auto_codebook_size(n_items, int(merged[key]))}


def _size_advice(quality: dict) -> str:
    """How to give the catalogue more room: a larger codebook (what `auto` or doubling would give) or a level more."""
    sizes, n_items, levels = quality["vocab_sizes"], quality["n_items"], quality["n_levels"]
    levels_key = "num_digits" if quality.get("tokenizer") == "OPQ" else "num_levels"
    current = max(int(size) for size in sizes)
    suggested = max(auto_codebook_size(n_items, levels), 2 * current)
    suggested = 1 << (suggested - 1).bit_length()
    return (f"raise tokenizer_params.codebook_size (now {'x'.join(str(s) for s in sizes)}; e.g. {suggested}, or "
            f"`auto`, which sizes it from the item count) or {levels_key} (now {levels})")


def collapse_warning(quality: dict) -> str | None:
    """A warning message when the codes look collapsed, naming the figure and what to try; None when healthy.

    First-level usage is measured against the codes a catalogue can use at all (min(vocab size, n_items)), so a
    catalogue smaller than the codebook is not flagged for that reason alone. The advice fits the tokenizer that
    produced the codes (`quality["tokenizer"]`): codes concentrated on few prefixes are a training failure of an
    RQ-VAE (more epochs, dead-code re-seeding, or residual k-means instead), while collisions alone, with the codes
    spread, mean the codebooks are too small for the catalogue (a larger codebook_size or another level)."""
    problems, concentrated = [], False
    prefix_share = quality.get("prefix2_max_share")
    if prefix_share is not None and prefix_share > MAX_PREFIX2_SHARE:
        problems.append(f"{prefix_share:.0%} of the items share their first two codes")
        concentrated = True
    usable_first_codes = min(quality["vocab_sizes"][0], quality["n_items"])
    first_usage = quality["n_used"][0] / max(usable_first_codes, 1)
    if first_usage < MIN_FIRST_LEVEL_USAGE:
        problems.append(
            f"first-level usage is {first_usage:.1%} ({quality['n_used'][0]} of {usable_first_codes} usable codes)"
        )
        concentrated = True
    capacity = math.prod(quality["vocab_sizes"])
    random_rate = 1.0 - (1.0 - 1.0 / capacity) ** (quality["n_items"] - 1)
    if quality["collision_rate"] > max(MAX_COLLISION_RATE, COLLISION_VS_RANDOM * random_rate):
        problems.append(f"{quality['collision_rate']:.0%} of the items collide on their full code ({capacity:,} "
                        f"codes for {quality['n_items']:,} items; uniformly random codes would collide "
                        f"{random_rate:.0%})")
    if not problems:
        return None
    tokenizer = quality.get("tokenizer")
    training_advice = ("more tokenizer epochs, dead_code_reset: True with k-means initialisation and standardised "
                       "inputs, or the RQKMeans tokenizer (residual k-means, which cannot collapse this way)")
    advice = []
    if concentrated:
        if tokenizer == "RQKMeans":  # every centroid is the mean of a non-empty cluster: the inputs are alike
            advice.append("check the item vectors (many items with the same text? see text_fields) and keep "
                          "standardize: True")
        elif tokenizer in TRAINED_TOKENIZERS or tokenizer is None:
            advice.append(training_advice)
        else:
            advice.append(f"check the item vectors (text_fields) and {tokenizer}'s parameters")
    elif tokenizer == "HKMeans":
        advice.append("raise tokenizer_params.branches")
    elif tokenizer in TRAINED_TOKENIZERS and max(quality["vocab_sizes"]) >= auto_codebook_size(
            quality["n_items"], quality["n_levels"]):  # room enough: the codes are not trained apart yet
        advice.append(training_advice)
    else:
        advice.append(_size_advice(quality))
        if tokenizer in TRAINED_TOKENIZERS:
            advice.append("train the tokenizer longer (epochs)")
    return "Semantic IDs look collapsed: " + "; ".join(problems) + ". Try " + "; or ".join(advice) + "."


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
