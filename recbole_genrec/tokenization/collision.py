"""Collision policies: what to do with items whose codes are identical.

Every policy has the signature `policy(codes, last_level_distances=None) -> (codes, extra_vocab_size)`:
codes [n_items, L] long (items only, no padding row); `last_level_distances` [n_items, K] are the squared
distances of each item's last-level residual to the K last-level codes (only `reassign_last_level` needs them);
`extra_vocab_size` is the vocabulary size of an appended level, or None when no level is appended."""
import logging

import numpy as np
import torch

logger = logging.getLogger("recbole_genrec")


def append_digit(codes: torch.Tensor, last_level_distances=None):
    """TIGER: items sharing all L codes get an extra digit = their index inside the collision group (in item-id
    order, the first is 0); all other items get 0. The new level's vocabulary = the largest group (at least 1)."""
    codes = torch.as_tensor(codes, dtype=torch.long)
    _, group, group_sizes = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    group = group.numpy()
    order = np.argsort(group, kind="stable")  # items of a group together, in item-id order
    sorted_groups = group[order]
    first_of_group = np.searchsorted(sorted_groups, sorted_groups, side="left")
    digit = np.empty(len(codes), dtype=np.int64)
    digit[order] = np.arange(len(codes)) - first_of_group
    extra_vocab_size = max(int(group_sizes.max()), 1) if len(codes) else 1
    return torch.cat([codes, torch.from_numpy(digit)[:, None]], dim=1), extra_vocab_size


def keep_collisions(codes: torch.Tensor, last_level_distances=None):
    """'none': codes unchanged, duplicates allowed (unordered codes such as OPQ's, scored per digit)."""
    return torch.as_tensor(codes, dtype=torch.long).clone(), None


def reassign_last_level(codes: torch.Tensor, last_level_distances=None):
    """MQL4GRec: within each group of items sharing all L codes, the item nearest to the shared last-level code
    keeps it; the others, nearest first, move to their nearest last-level code that no item with the same
    (L-1)-prefix holds yet. Items for which every last-level code under their prefix is taken keep their
    duplicate (logged as a warning); the quality report after the policy counts them."""
    if last_level_distances is None:
        raise ValueError(
            "Collision policy 'reassign_last_level' needs the distances of every item to the last-level codes; "
            "this tokenizer does not provide them. Use 'append_digit' instead."
        )
    codes = torch.as_tensor(codes, dtype=torch.long).clone()
    distances = np.asarray(
        last_level_distances.cpu() if isinstance(last_level_distances, torch.Tensor) else last_level_distances,
        dtype=np.float64,
    )
    if distances.shape[0] != len(codes):
        raise ValueError(f"last_level_distances has {distances.shape[0]} rows for {len(codes)} items")
    _, group, group_sizes = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    colliding_groups = torch.nonzero(group_sizes > 1).flatten().tolist()
    if not colliding_groups:
        return codes, None
    rows = codes.tolist()
    taken = {tuple(row) for row in rows}
    unresolved = 0
    group = group.numpy()
    order = np.argsort(group, kind="stable")
    items_by_group = np.split(order, np.cumsum(group_sizes.numpy())[:-1])
    # Groups in order of their first item, so the result does not depend on torch.unique's sorting.
    groups_items = sorted((items_by_group[g] for g in colliding_groups), key=lambda items: items[0])
    for items in groups_items:
        shared_code = rows[items[0]][-1]
        by_closeness = items[np.argsort(distances[items, shared_code], kind="stable")]
        for item in by_closeness[1:].tolist():  # the closest keeps the shared code
            prefix = tuple(rows[item][:-1])
            for candidate in np.argsort(distances[item], kind="stable").tolist():
                if not np.isfinite(distances[item, candidate]):
                    continue  # not a real code (e.g. k-means capped the codebook)
                if prefix + (candidate,) not in taken:
                    rows[item][-1] = candidate
                    taken.add(prefix + (candidate,))
                    break
            else:
                unresolved += 1
    if unresolved:
        logger.warning(
            f"reassign_last_level: {unresolved} items keep a duplicate ID because every last-level code under their "
            f"prefix is taken; use 'append_digit' or a larger last-level codebook if IDs must be unique."
        )
    return torch.tensor(rows, dtype=torch.long), None


COLLISION_POLICIES = {
    "append_digit": append_digit,
    "none": keep_collisions,
    "reassign_last_level": reassign_last_level,
}

# Policies whose tokenizer must measure each item's distances to the last-level codes.
POLICIES_NEEDING_DISTANCES = {"reassign_last_level"}


def get_collision_policy(name: str):
    if name not in COLLISION_POLICIES:
        raise ValueError(f"Unknown collision policy '{name}'. Available: {', '.join(COLLISION_POLICIES)}.")
    return COLLISION_POLICIES[name]


def apply_collision_policy(name: str, codes: torch.Tensor, vocab_sizes, last_level_distances=None):
    """Run the policy `name`; returns (codes, per-level vocabulary sizes including an appended level)."""
    new_codes, extra_vocab_size = get_collision_policy(name)(codes, last_level_distances=last_level_distances)
    vocab_sizes = [int(size) for size in vocab_sizes]
    if extra_vocab_size is not None:
        vocab_sizes.append(int(extra_vocab_size))
    return new_codes, vocab_sizes
