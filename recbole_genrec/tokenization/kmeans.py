"""k-means on faiss, shared by every tokenizer that clusters (RQ-VAE initialisation, RQ-KMeans, hierarchical
k-means). Plain k-means and a size-constrained ("balanced") variant used by LETTER, ColaRec and EAGER."""
import math
from contextlib import contextmanager

import numpy as np

from recbole_genrec.tokenization.faiss_index import faiss, flat_l2

# Below this many points faiss's OpenMP threads cost more than they save (LETTER re-clusters 256-code codebooks
# every epoch: 6 ms on one thread, 30-80 ms on two busy cores where the threads spin-wait).
SINGLE_THREAD_MAX_POINTS = 4096


def _as_float32(x) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"k-means expects a 2-d array [n, d], got shape {x.shape}")
    if len(x) == 0:
        raise ValueError("k-means got no points to cluster")
    return x


def squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """[n, k] squared Euclidean distances (float32), clipped at 0 against rounding."""
    x = _as_float32(x)
    centroids = _as_float32(centroids)
    distances = (x * x).sum(1, keepdims=True) - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None, :]
    return np.maximum(distances, 0.0)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray):
    """(assignments [n] int64, squared distances to the assigned centroid [n] float32), exact, via faiss."""
    x = _as_float32(x)
    centroids = _as_float32(centroids)
    index = flat_l2(x.shape[1], len(x))
    index.add(centroids)
    distances, assignments = index.search(x, 1)
    return assignments[:, 0].astype(np.int64), distances[:, 0]


@contextmanager
def _faiss_threads_for(n_points: int):
    if n_points > SINGLE_THREAD_MAX_POINTS:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def kmeans(x: np.ndarray, k: int, niter: int = 50, seed: int = 2020, gpu: bool | None = None):
    """Cluster `x` [n, d] into at most `k` clusters with faiss.

    Returns (centroids [k', d] float32, assignments [n] int64) with k' = min(k, number of distinct points):
    with no more distinct points than clusters the points themselves are the centroids (exact, no faiss run).
    gpu=None uses a GPU index when faiss has one and `x` is large enough (faiss_index.py), False the CPU."""
    x = _as_float32(x)
    if k < 1:
        raise ValueError(f"k-means needs k >= 1, got {k}")
    distinct_points = np.unique(x, axis=0)
    if len(distinct_points) <= k:
        centroids = np.ascontiguousarray(distinct_points)
        assignments, _ = nearest_centroid(x, centroids)
        return centroids, assignments
    # min_points_per_centroid=1: small catalogues are the normal case here, faiss's "too few points" warning is noise.
    clustering = faiss.Kmeans(
        x.shape[1], int(k), niter=int(niter), seed=int(seed), verbose=False, min_points_per_centroid=1
    )
    clustering.index = flat_l2(x.shape[1], len(x), gpu)  # faiss.Kmeans assigns points with this index
    with _faiss_threads_for(len(x)):
        clustering.train(x)
        centroids = np.ascontiguousarray(clustering.centroids, dtype=np.float32)
        assignments, _ = nearest_centroid(x, centroids)
    return centroids, assignments


def capacity_constrained_assignment(distances: np.ndarray, capacity: int) -> np.ndarray:
    """Assign each of n points to one of k clusters, no cluster above `capacity` points (needs n <= k * capacity).

    Greedy on sorted distances, in rounds so that it stays vectorised: every unassigned point proposes its nearest
    cluster that is not yet full, and each cluster accepts its closest proposers up to its remaining capacity. A
    cluster that rejects anyone is full afterwards, so there are at most k rounds. Returns assignments [n] int64."""
    n_points, n_clusters = distances.shape
    if n_points > n_clusters * capacity:
        raise ValueError(f"{n_points} points do not fit in {n_clusters} clusters of capacity {capacity}")
    assignments = np.full(n_points, -1, dtype=np.int64)
    sizes = np.zeros(n_clusters, dtype=np.int64)
    unassigned = np.arange(n_points)
    while unassigned.size:
        candidate_distances = distances[unassigned].astype(np.float64)
        candidate_distances[:, sizes >= capacity] = np.inf
        proposals = candidate_distances.argmin(1)
        proposal_distances = candidate_distances[np.arange(len(unassigned)), proposals]
        order = np.lexsort((proposal_distances, proposals))  # grouped by cluster, closest first
        sorted_clusters = proposals[order]
        group_starts = np.searchsorted(sorted_clusters, sorted_clusters, side="left")
        rank_in_cluster = np.arange(len(order)) - group_starts
        accepted = rank_in_cluster < capacity - sizes[sorted_clusters]
        assignments[unassigned[order[accepted]]] = sorted_clusters[accepted]
        sizes += np.bincount(sorted_clusters[accepted], minlength=n_clusters)
        unassigned = np.sort(unassigned[order[~accepted]])
    return assignments


def fill_to_minimum(distances: np.ndarray, assignments: np.ndarray, size_min: int) -> np.ndarray:
    """Move points so that every cluster holds at least `size_min` (needs n >= k * size_min): each cluster short of
    it, in cluster order, takes the points that cost least to move (distance to it minus distance to their own
    cluster) from clusters holding more than `size_min`. No cluster grows beyond `size_min` this way, so an upper
    size bound that held before still holds. Returns new assignments [n] int64."""
    n_points, n_clusters = distances.shape
    if n_points < n_clusters * size_min:
        raise ValueError(f"{n_points} points cannot fill {n_clusters} clusters of at least {size_min}")
    assignments = np.array(assignments, dtype=np.int64)
    sizes = np.bincount(assignments, minlength=n_clusters)
    for cluster in np.flatnonzero(sizes < size_min).tolist():
        extra_cost = distances[:, cluster].astype(np.float64) - distances[np.arange(n_points), assignments]
        for point in np.argsort(extra_cost, kind="stable").tolist():
            if sizes[cluster] >= size_min:
                break
            donor = assignments[point]
            if donor != cluster and sizes[donor] > size_min:
                assignments[point] = cluster
                sizes[donor] -= 1
                sizes[cluster] += 1
    return assignments


def balanced_kmeans(
    x: np.ndarray, k: int, niter: int = 50, seed: int = 2020, gpu: bool | None = None, refine_iters: int = 10,
    size_min: int = 0, size_max: int | None = None,
):
    """Size-constrained k-means: every cluster holds between `size_min` and `size_max` points, k' = min(k, n)
    clusters; `size_max` None = ceil(n / k') (as even as possible). LETTER's official code bounds both sides
    (`KMeansConstrained(size_min, size_max)`); ColaRec and EAGER use the default upper bound alone.

    Starts from faiss k-means centroids, then alternates the greedy capacity-constrained assignment (topped up to
    `size_min` by `fill_to_minimum`) with centroid updates for up to `refine_iters` rounds (stops early when
    assignments are stable). With fewer distinct points than k' the centroids are repeated up to k', so identical
    points are spread over copies and the size bound still holds (a hierarchical tree relies on it). Without a
    lower bound a cluster can end up empty only when n is far from a multiple of k'.
    Returns (centroids [k', d] float32, assignments [n] int64)."""
    x = _as_float32(x)
    n_clusters = min(int(k), len(x))
    capacity = math.ceil(len(x) / n_clusters) if size_max is None else int(size_max)
    size_min = int(size_min)
    if not n_clusters * size_min <= len(x) <= n_clusters * capacity:
        raise ValueError(f"{len(x)} points cannot form {n_clusters} clusters of {size_min} to {capacity} points")
    centroids, assignments = kmeans(x, n_clusters, niter=niter, seed=seed, gpu=gpu)
    if len(centroids) < n_clusters:
        centroids = np.ascontiguousarray(centroids[np.arange(n_clusters) % len(centroids)])
    counts = np.bincount(assignments, minlength=n_clusters)
    if counts.max() <= capacity and counts.min() >= size_min:
        return centroids, assignments
    previous = None
    for _ in range(max(1, refine_iters)):
        distances = squared_distances(x, centroids)
        assignments = capacity_constrained_assignment(distances, capacity)
        if size_min > 0:
            assignments = fill_to_minimum(distances, assignments, size_min)
        if previous is not None and np.array_equal(assignments, previous):
            break
        previous = assignments
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignments, x)
        counts = np.bincount(assignments, minlength=n_clusters)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]  # an empty cluster keeps its centroid
    return centroids, assignments


def sinkhorn_assignment(distances, epsilon: float, iterations: int = 50, rows=None):
    """Balanced assignment of n points to k codes (LETTER's last level, after SwAV's Sinkhorn-Knopp).

    distances: torch [n, k], or [G, n, k] for G independent problems solved at once, where `rows` [G] gives each
    problem's number of real points (its first rows; the rest is padding, which gets no mass). Per problem, the
    distances are centred and scaled to [-1, 1], turned into a transport plan exp(-d / epsilon) and alternately
    normalised so that every code receives 1/k of the mass and every point 1/n; each point takes the code of its
    largest share. Computed in float64 (exp(1/epsilon) overflows float32). Returns long codes [n] (or [G, n])."""
    import torch

    d = distances.double()
    batched = d.dim() == 3
    if not batched:
        d = d[None]
    n_problems, n_points, n_codes = d.shape
    if rows is None:  # no padding (LETTER's training batches, every step): no masks on that path
        valid, points = None, float(n_points)
        high, low = d.amax((1, 2), keepdim=True), d.amin((1, 2), keepdim=True)
    else:
        rows = torch.as_tensor(rows, device=d.device)
        valid = (torch.arange(n_points, device=d.device)[None, :] < rows[:, None])[..., None]  # [G, n, 1]
        points = rows.double()[:, None, None]
        high = d.masked_fill(~valid, float("-inf")).amax((1, 2), keepdim=True)
        low = d.masked_fill(~valid, float("inf")).amin((1, 2), keepdim=True)
    middle = (high + low) / 2
    amplitude = high - middle + 1e-5
    if valid is not None:
        d = torch.where(valid, d, middle)  # padding: a finite exponent, then no mass
    plan = torch.exp(-((d - middle) / amplitude) / epsilon)
    if valid is not None:
        plan = plan * valid
    plan /= plan.sum((1, 2), keepdim=True)
    tiny = torch.finfo(torch.float64).tiny
    for _ in range(int(iterations)):
        plan /= plan.sum(1, keepdim=True) * n_codes
        plan /= (plan.sum(2, keepdim=True) * points).clamp_min(tiny)  # padding rows stay 0
    codes = plan.argmax(2)
    return codes if batched else codes[0]
