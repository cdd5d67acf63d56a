"""LETTER's learnable item tokenizer (Wang et al., CIKM 2024): an RQ-VAE with collaborative and diversity
regularisation. Official code: HonghuiBao2000/LETTER (RQ-VAE/).

On top of the shared RQ-VAE (tokenization/rqvae.py), as in the official code:
- codebooks initialised by size-constrained k-means, clusters of min(n // 2K, 50) to 4x that many items
  (`models/vq.py` `constrained_km`, widened to ceil(n / K) where that bound cannot hold);
- per level: ||sg[r] - e||^2 + mu * ||r - sg[e]||^2 + beta * diversity, averaged over levels (mu is the shared
  RQ-VAE's commitment weight `beta` here, the paper's beta is `diversity_weight`); with `detach_residuals` (the
  default) level l >= 1 quantises a residual without gradient, as `models/rq.py` subtracts the straight-through
  output, so only level 0's commitment trains the encoder;
- diversity: every `cluster_interval` epochs each level's codebook is clustered into `n_clusters` groups of
  min(n // 2k, 10) to 6k codes (`trainer.py` `constrained_km`: 10 to 60 for 256 codes in 10 groups); each item's
  quantised vector is pulled, by a softmax over the level's codes, towards a random other code of the same group as
  its own code (its own code masked out);
- the weights kept are those of the epoch with the lowest collision rate, checked every `collision_check_interval`
  epochs (`trainer.py`: eval_step 2000 of 20000 epochs);
- CF alignment (weight alpha): in-batch softmax contrastive loss between the quantised latent (straight-through,
  32-d) and the item's collaborative embedding (SASRec's, representation/collaborative.py); items without a CF
  vector (never in the training split) are left out of it;
- Sinkhorn balanced assignment of the last level during training (epsilon 0.003), and after training, for items
  that still collide, up to `collision_rounds` Sinkhorn re-assignments of their last code within each collision
  group. Collisions that remain go to the shared collision policy.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from recbole_genrec.tokenization.kmeans import balanced_kmeans, sinkhorn_assignment
from recbole_genrec.tokenization.rqvae import ResidualQuantizedVAE, RQVAETokenizer, squared_distances


def group_size_bounds(n_codes: int, n_groups: int):
    """(size_min, size_max) of the diversity groups, as the official trainer's `constrained_km`:
    min(n // (2k), 10) and 6k, the upper bound raised to ceil(n / k) where 6k groups could not hold n codes."""
    size_min = min(n_codes // (2 * n_groups), 10)
    return size_min, max(6 * n_groups, math.ceil(n_codes / n_groups))


def init_size_bounds(n_points: int, n_codes: int):
    """(size_min, size_max) of the codebook initialisation's clusters, as the official `VectorQuantizer.init_emb`
    (`constrained_km(data, 256)`): min(n // (2K), 50) and 4x that, the upper bound raised to ceil(n / K) where it
    could not hold n points (small catalogues, where the official bound is 0)."""
    n_clusters = min(n_codes, n_points)
    size_min = min(n_points // (2 * n_clusters), 50)
    return size_min, max(4 * size_min, math.ceil(n_points / n_clusters))


class CodeGroups:
    """Each code's group (balanced k-means of one level's codebook) as tables for vectorised positive sampling."""

    def __init__(self, labels: np.ndarray, device):
        labels = torch.as_tensor(labels, dtype=torch.long)
        self.members = torch.argsort(labels, stable=True)  # codes ordered by group
        sizes = torch.bincount(labels)
        starts = torch.cumsum(sizes, 0) - sizes
        position = torch.empty_like(labels)
        position[self.members] = torch.arange(len(labels)) - starts[labels[self.members]]
        self.members, self.position = self.members.to(device), position.to(device)
        self.start, self.size = starts[labels].to(device), sizes[labels].to(device)  # per code

    def sample_other_member(self, codes):
        """For codes [n]: a uniformly random other code of the same group, and whether one exists (group size > 1)."""
        size, has_other = self.size[codes], self.size[codes] > 1
        offset = 1 + (torch.rand(len(codes), device=codes.device) * (size - 1).clamp(min=1)).long()
        return self.members[self.start[codes] + (self.position[codes] + offset) % size], has_other


SINKHORN_CHUNK_ENTRIES = 1 << 22  # padded [groups, width, K] distances per batched collision pass


class CollaborativeRQVAE(ResidualQuantizedVAE):
    def __init__(self, *args, diversity_weight=1e-4, sinkhorn_epsilon=0.003, sinkhorn_iterations=50, **kwargs):
        super().__init__(*args, **kwargs)
        self.diversity_weight = diversity_weight
        self.sinkhorn_epsilon, self.sinkhorn_iterations = sinkhorn_epsilon, sinkhorn_iterations
        self.code_groups = [None] * self.num_levels  # set by LETTERTokenizer before training epochs

    def assign_codes(self, level, residual):
        if self.training and level == self.num_levels - 1 and self.sinkhorn_epsilon > 0:
            distances = squared_distances(residual, self.codebooks[level])
            return sinkhorn_assignment(distances, self.sinkhorn_epsilon, self.sinkhorn_iterations)
        return super().assign_codes(level, residual)

    def level_loss(self, level, residual, chosen, codes):
        loss = super().level_loss(level, residual, chosen, codes)  # codebook + beta (official: mu) * commitment
        groups = self.code_groups[level]
        if self.diversity_weight > 0 and groups is not None:
            positive, has_other = groups.sample_other_member(codes)
            logits = chosen @ self.codebooks[level].T
            logits = logits.scatter(1, codes[:, None], float("-inf"))  # never the item's own code
            # Mean over the items whose group has another code, as a weighted mean (no host sync); the others get
            # a finite placeholder target and weight 0.
            positive = torch.where(has_other, positive, (codes + 1) % logits.shape[1])
            per_item = F.cross_entropy(logits, positive, reduction="none")
            diversity = (per_item * has_other).sum() / has_other.sum().clamp(min=1)
            loss = loss + self.diversity_weight * diversity
        return loss / self.num_levels  # the official code averages the level losses


class LETTERTokenizer(RQVAETokenizer):
    name = "LETTER"
    needs_collaborative = True
    default_params = {
        **RQVAETokenizer.default_params,
        "num_levels": 4,
        "hidden_dims": (512, 256, 128, 64),
        "latent_dim": 32,
        "beta": 0.25,                # commitment weight (the official code calls it mu)
        "alpha": 0.02,               # CF alignment weight
        "diversity_weight": 1e-4,    # the paper's beta
        "n_clusters": 10,            # groups per codebook for the diversity loss
        "cluster_interval": 1,       # epochs between re-clustering the codebooks (official: every epoch)
        "sinkhorn_epsilon": 0.003,   # last level only; 0 turns the balanced assignment off
        "sinkhorn_iterations": 50,
        "collision_rounds": 20,      # post-training Sinkhorn re-assignment rounds on colliding items
        "dead_code_reset": False,    # not in LETTER: balance comes from Sinkhorn and the diversity loss
        "epochs": 20000,             # official main.py
        "collision_check_interval": 2000,  # official eval_step: keep the weights of the lowest collision rate
        "detach_residuals": True,    # official rq.py: levels >= 1 give the encoder no gradient
    }

    def _build_network(self, input_dim):
        params = self.params
        latent_dim = int(params["latent_dim"])
        if self.collaborative.shape[1] != latent_dim:
            raise ValueError(
                f"LETTER aligns the {latent_dim}-d quantised latent with the CF embeddings, which are "
                f"{self.collaborative.shape[1]}-d: set cf_params.hidden_size to {latent_dim} (or latent_dim to "
                f"{self.collaborative.shape[1]}).")
        cf = torch.from_numpy(self.collaborative).to(self.device)
        self.fit_cf = cf[self.fit_items]
        self.fit_cf_known = self.fit_cf.norm(dim=1) > 0
        return CollaborativeRQVAE(
            input_dim=input_dim, hidden_dims=[int(dim) for dim in params["hidden_dims"]], latent_dim=latent_dim,
            num_levels=int(params["num_levels"]), codebook_size=int(params["codebook_size"]),
            beta=float(params["beta"]), dropout=float(params["dropout"]),
            detach_residuals=bool(params["detach_residuals"]), diversity_weight=float(params["diversity_weight"]),
            sinkhorn_epsilon=float(params["sinkhorn_epsilon"]), sinkhorn_iterations=int(params["sinkhorn_iterations"]),
        )

    def _init_cluster(self, points, k, niter, seed):
        size_min, size_max = init_size_bounds(len(points), k)
        return balanced_kmeans(points, k, niter=niter, seed=seed, size_min=size_min, size_max=size_max)

    def code_groups(self, codebook, seed):
        """Group label of each code of one level's codebook [K, D]: size-constrained k-means into `n_clusters`."""
        n_groups = int(self.params["n_clusters"])
        size_min, size_max = group_size_bounds(len(codebook), n_groups)
        return balanced_kmeans(codebook, n_groups, seed=seed, size_min=size_min, size_max=size_max)[1]

    def _on_epoch_start(self, epoch, seed):
        if self.params["diversity_weight"] > 0 and epoch % int(self.params["cluster_interval"]) == 0:
            self.network.code_groups = [
                CodeGroups(self.code_groups(codebook.detach().cpu().numpy(), seed + level), self.device)
                for level, codebook in enumerate(self.network.codebooks)
            ]

    def _batch_loss(self, batch_inputs, batch_index):
        loss, reconstruction_loss, quantized = self.network.loss(batch_inputs)
        if self.params["alpha"] > 0:
            # In-batch softmax: each item's quantised latent should pick out its own CF embedding among the batch's
            # items that have one. Items without a CF vector are neither candidates nor counted; masks instead of
            # boolean indexing keep the loop free of host syncs (each row keeps its own column, so no row is empty).
            known = self.fit_cf_known[batch_index]
            own = torch.eye(len(known), dtype=torch.bool, device=known.device)
            logits = (quantized @ self.fit_cf[batch_index].T).masked_fill(~known[None, :] & ~own, float("-inf"))
            per_item = F.cross_entropy(logits, torch.arange(len(logits), device=logits.device), reduction="none")
            cf_loss = (per_item * known).sum() / known.sum().clamp(min=1)
            loss = loss + float(self.params["alpha"]) * cf_loss
        return loss, reconstruction_loss

    @torch.no_grad()
    def _encode(self, inputs, with_last_level_distances=False):
        """Nearest codes, then the Sinkhorn pass on colliding items; one encoder pass serves both (and the
        distances the collision policy may need)."""
        residuals, codes = self.network.level_residuals(inputs)
        codes = self._resolve_collisions_by_sinkhorn(residuals[-1], torch.stack(codes, 1).cpu())
        distances = None
        if with_last_level_distances:
            distances = squared_distances(residuals[-1], self.network.codebooks[-1]).cpu()
        return codes, distances

    def _resolve_collisions_by_sinkhorn(self, last_residuals, codes):
        """Official generate_indices: items that share a full ID get their last code re-assigned by a balanced
        (Sinkhorn) assignment within their collision group, repeated up to `collision_rounds` times. The groups of
        a round are independent problems, solved as padded batches (groups sorted by size, so that little is
        padding) instead of one at a time: the same codes up to float rounding where two codes tie in the plan;
        6x faster with many small groups, 2x with few large ones (12,101 items, one thread)."""
        epsilon = float(self.params["sinkhorn_epsilon"]) or 0.003
        codebook = self.network.codebooks[-1]
        for _ in range(int(self.params["collision_rounds"])):
            _, group, sizes = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
            colliding = torch.nonzero(sizes[group] > 1).flatten()
            if not len(colliding):
                break
            by_group = colliding[torch.argsort(group[colliding], stable=True)]
            group_sizes = torch.unique_consecutive(group[by_group], return_counts=True)[1]
            members = torch.split(by_group, group_sizes.tolist())
            order = torch.argsort(group_sizes, stable=True).tolist()
            start, budget = 0, SINKHORN_CHUNK_ENTRIES // len(codebook)
            while start < len(order):
                stop = start + 1  # sorted by size: a chunk's last group is its widest
                while stop < len(order) and (stop + 1 - start) * int(group_sizes[order[stop]]) <= budget:
                    stop += 1
                chunk = [members[index] for index in order[start:stop]]
                width = int(group_sizes[order[stop - 1]])
                padded = torch.stack([torch.cat([m, m.new_full((width - len(m),), int(m[0]))]) for m in chunk])
                rows = torch.tensor([len(m) for m in chunk])
                distances = squared_distances(last_residuals[padded.flatten().to(last_residuals.device)], codebook)
                assigned = sinkhorn_assignment(distances.view(len(chunk), width, -1), epsilon,
                                               int(self.params["sinkhorn_iterations"]), rows=rows).cpu()
                valid = torch.arange(width)[None, :] < rows[:, None]
                codes[padded[valid], -1] = assigned[valid]
                start = stop
        return codes
