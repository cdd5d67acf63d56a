"""Hierarchical balanced k-means: a tree over the catalogue whose leaves are single items (EAGER, ColaRec).

The items are split into `branches` clusters by size-constrained k-means, each cluster is split again the same way,
and so on; the last code is an item's index inside its leaf cluster. `cluster_size_max` bounds a cluster: `even`,
at most ceil(n / branches) of its node's n items (EAGER); `subtree`, at most the leaves of the subtree under it,
branches ** (levels - 1 - depth) (ColaRec's hierarchical_cluster.py: `size_max = cluster ** (length - level)`, 1,024
then 32 items for 32 branches and 3 levels), which leaves k-means freer and the tree less even. With
L = ceil(log_branches(n)) levels a node at depth L - 1 holds at most `branches` items, so every item gets a
distinct ID by construction: no collision policy and no collision digit are needed. Unlike the residual
quantisers, the codes of a level mean something only under their prefix (a tree, not a codebook per level).
"""
import math

import numpy as np
import torch

from recbole_genrec.tokenization.base import SemanticIds, Tokenizer, standardization_stats
from recbole_genrec.tokenization.kmeans import balanced_kmeans


class HierarchicalKMeansTokenizer(Tokenizer):
    name = "HKMeans"
    # num_levels 0: the fewest levels whose tree holds the catalogue (EAGER: 128 branches, 2 levels on its data;
    # ColaRec: 32 branches, 3 levels)
    # collision none: leaves are unique, and a collision digit would be a spurious tree level
    default_params = {"branches": 128, "num_levels": 0, "niter": 50, "standardize": False, "collision": "none",
                      "cluster_size_max": "even"}
    CLUSTER_SIZE_MAX = ("even", "subtree")

    def __init__(self, **params):
        super().__init__(**params)
        if int(self.params["branches"]) < 2:
            raise ValueError(f"HKMeans needs branches >= 2, got {self.params['branches']}")
        if self.params["cluster_size_max"] not in self.CLUSTER_SIZE_MAX:
            raise ValueError(f"HKMeans: tokenizer_params.cluster_size_max must be one of {self.CLUSTER_SIZE_MAX}, "
                             f"got {self.params['cluster_size_max']!r}.")

    def num_levels_for(self, n_items: int) -> int:
        branches, levels = int(self.params["branches"]), int(self.params["num_levels"])
        needed = max(1, math.ceil(math.log(max(n_items, 2)) / math.log(branches) - 1e-9))
        if levels and levels != needed:
            # fewer levels cannot hold the catalogue; more would only add levels of single-child nodes
            raise ValueError(f"HKMeans: {n_items} items with {branches} branches need exactly {needed} level(s) "
                             f"({branches ** (needed - 1)} < {n_items} <= {branches ** needed} leaves), got "
                             f"num_levels {levels}: set it to {needed}, change `branches`, or set num_levels: 0 to "
                             f"derive it.")
        return needed

    def raw_vocab_sizes(self, raw_codes):
        return [int(self.params["branches"])] * raw_codes.shape[1]

    def _fit_codes(self, vectors, fit_mask, seed):
        # The tree partitions every item (each needs its own leaf); its content is known for all of them, so
        # `fit_mask` only sets the standardisation statistics.
        if self.params["standardize"]:
            mean, std = standardization_stats(vectors, fit_mask)
            vectors = (vectors - mean) / std
        branches, niter = int(self.params["branches"]), int(self.params["niter"])
        levels = self.num_levels_for(len(vectors))
        subtree_caps = self.params["cluster_size_max"] == "subtree"
        codes = np.zeros((len(vectors), levels), dtype=np.int64)
        nodes = [np.arange(len(vectors))]  # the items of every node at the current depth
        for depth in range(levels):
            children = []
            for node, items in enumerate(nodes):
                if depth == levels - 1:
                    codes[items, depth] = np.arange(len(items))  # at most `branches` items: unique leaves
                    continue
                # None: balanced_kmeans's even bound; subtree: a child holds at most its subtree's leaves
                size_max = branches ** (levels - 1 - depth) if subtree_caps else None
                _, assignments = balanced_kmeans(vectors[items], branches, niter=niter,
                                                 seed=seed + depth * 7919 + node, size_max=size_max)
                codes[items, depth] = assignments
                children += [items[assignments == cluster] for cluster in np.unique(assignments)]
            nodes = children
        return torch.from_numpy(codes)


def tree_path_codes(semantic_ids: SemanticIds, branches: int) -> SemanticIds:
    """Level l's code -> the index of the item's whole path down to level l (c_1 * k^(l-1) + ... + c_l), vocabulary
    k^l: a token names a tree node, not a branch number shared by all parents (EAGER's decoder vocabulary: a
    leaf's slot means nothing without its parent). The quality report is kept."""
    codes = semantic_ids.codes.clone()
    for level in range(1, codes.shape[1]):
        codes[:, level] = codes[:, level - 1] * branches + semantic_ids.codes[:, level]
    codes[0] = 0  # padding row
    vocab_sizes = [branches ** (level + 1) for level in range(codes.shape[1])]
    return SemanticIds(codes=codes, vocab_sizes=vocab_sizes, quality=dict(semantic_ids.quality))
