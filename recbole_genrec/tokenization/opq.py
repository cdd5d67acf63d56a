"""OPQ: optimised product quantisation on faiss, RPG's tokenizer (Hou et al., KDD 2025).

The index is the official code's `faiss.index_factory(d, f"OPQ{m},IVF1,PQ{m}x{nbits}")`: a learned rotation (OPQ),
one coarse cell (IVF1, so the PQ encodes the residual to the mean of the fit items) and a product quantiser of m
sub-vectors with 2^nbits codes each. It is trained on the fit items (RPG: items of the training sequences) and
then codes every item. The m digits are unordered (each digit is its own sub-space), so duplicates are allowed
(collision policy `none` by default).

Preprocessing, in order: optional standardisation (`standardize`), optional PCA whitening (`pca_whiten_dim` > 0),
a plain PCA to at most n_fit dimensions when there are fewer fit items than dimensions (faiss's OPQ training
crashes otherwise), then zero-padding of the dimension to a multiple of m (the OPQ rotation mixes the zero columns
with the others, so padding loses nothing; it only makes d divisible by m).

PCA whitening is the official code's (`genrec/models/RPG/tokenizer.py`, `_init_tokenizer`: sklearn
`PCA(n_components=sent_emb_pca, whiten=True).fit_transform(sent_embs)`, 512 for its text-embedding-3-large vectors,
128 in its sentence-T5 config, `genrec/models/RPG/config.yaml`): centred, projected on the top principal axes and
divided by the square roots of their variances (denominator n - 1, as sklearn), so the output has identity
covariance. It is fitted on every item (`pca_fit_on: all`, as the official code: item text only, no interactions)
or on the fit items alone (`pca_fit_on: fit`). (faiss's `PCAMatrix(eigen_power=-0.5)` is not used: it scales by
the scatter matrix's eigenvalues, i.e. gives covariance I / n.)

`metric`: the index's metric, `inner_product` as the official code (`faiss.METRIC_INNER_PRODUCT` in
`_generate_semantic_id_opq`) or `l2`. With IVF1 it only changes the single coarse centroid (spherical k-means
under the inner product: the mean direction normalised to length 1, instead of the mean); the PQ then encodes each
vector minus that one centroid, and k-means is translation-equivariant, so the codes agree up to float rounding.

After `fit`, `self.codebooks` holds the learned per-digit centroids, float32 [m, codebook_size, d / m] (in the
rotated space, relative to the coarse centroid), `self.rotation` the OPQ matrix [d, d] and `self.coarse_centroid`
IVF1's centroid [d] (rotated space): an item's code is the nearest codebook entry of rotation @ x - coarse_centroid,
digit by digit."""
import logging
import math

import numpy as np
import torch

from recbole_genrec.tokenization.base import Tokenizer, standardization_stats
from recbole_genrec.tokenization.faiss_index import faiss, flat_l2

logger = logging.getLogger("recbole_genrec")


METRICS = {"inner_product": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


def pca_whiten(x: np.ndarray, dim: int, fit_mask=None) -> np.ndarray:
    """sklearn's `PCA(n_components=dim, whiten=True).fit(x[fit_mask]).transform(x)`, computed exactly (eigh of the
    covariance in float64; sklearn may pick a randomised solver): x float [n, d] -> float32 [n, dim] whose fit rows
    have zero mean and identity covariance (denominator n_fit - 1). Each axis' sign is fixed (its largest-magnitude
    loading positive) so the result is deterministic. fit_mask None = fit on every row."""
    fit = np.asarray(x if fit_mask is None else x[fit_mask], dtype=np.float64)
    n_fit, d = fit.shape
    if not 1 <= dim <= d:
        raise ValueError(f"OPQ pca_whiten_dim {dim} must be in [1, {d}] (the input dimension)")
    if dim > n_fit - 1:
        raise ValueError(f"OPQ pca_whiten_dim {dim}: whitening needs more than {dim} items to fit on, got {n_fit}")
    mean = fit.mean(0)
    centred = fit - mean
    variances, axes = np.linalg.eigh(centred.T @ centred / (n_fit - 1))  # ascending
    variances, axes = variances[::-1][:dim], axes[:, ::-1][:, :dim]
    if variances[-1] <= 1e-12 * max(variances[0], 1e-30):
        raise ValueError(f"OPQ pca_whiten_dim {dim}: the fit vectors span fewer than {dim} dimensions (a principal "
                         f"variance is 0); lower pca_whiten_dim")
    signs = np.sign(axes[np.abs(axes).argmax(0), np.arange(dim)])
    axes = axes * signs
    return np.ascontiguousarray(((np.asarray(x, dtype=np.float64) - mean) @ axes) / np.sqrt(variances),
                                dtype=np.float32)


def unpack_pq_codes(packed: np.ndarray, m: int, nbits: int) -> np.ndarray:
    """faiss packs PQ codes little-endian bit by bit: uint8 [n, code_size] -> int64 [n, m]."""
    bits = np.unpackbits(np.ascontiguousarray(packed, dtype=np.uint8), axis=1, bitorder="little")
    bits = bits[:, : m * nbits].reshape(len(packed), m, nbits).astype(np.int64)
    return bits @ (1 << np.arange(nbits, dtype=np.int64))


class OPQTokenizer(Tokenizer):
    name = "OPQ"
    default_params = {
        "num_digits": 32,        # m: 16 / 32 / 64 in the paper
        "codebook_size": 256,    # codes per digit; must be a power of two (8 bits in the paper)
        "pca_whiten_dim": 0,     # 0 = off; official: 512 (OpenAI vectors), 128 (its sentence-T5 config)
        "pca_fit_on": "all",     # items the whitening is fitted on: all (official) | fit (the fit_mask items)
        "standardize": False,
        "metric": "inner_product",  # faiss index metric: inner_product (official) | l2
        "opq_niter": 50,         # faiss defaults
        "pq_niter": 25,
    }
    common_params = {"collision": "none", "device": "cpu"}

    def _fit_codes(self, vectors, fit_mask, seed):
        m, codebook_size = int(self.params["num_digits"]), int(self.params["codebook_size"])
        nbits = int(round(math.log2(codebook_size))) if codebook_size > 0 else 0
        if codebook_size < 2 or 2**nbits != codebook_size or nbits > 16:
            raise ValueError(f"OPQ codebook_size must be a power of two in [2, 65536], got {codebook_size}")
        if m < 1:
            raise ValueError(f"OPQ num_digits must be >= 1, got {m}")
        metric = str(self.params["metric"]).lower()
        if metric not in METRICS:
            raise ValueError(f"OPQ metric must be one of {', '.join(METRICS)}, got {self.params['metric']!r}")
        pca_fit_on = str(self.params["pca_fit_on"]).lower()
        if pca_fit_on not in ("all", "fit"):
            raise ValueError(f"OPQ pca_fit_on must be 'all' or 'fit', got {self.params['pca_fit_on']!r}")
        n_fit = int(fit_mask.sum())
        if n_fit < codebook_size:
            raise ValueError(
                f"OPQ: only {n_fit} fit items for codebook_size {codebook_size}: each of the {m} sub-quantisers "
                f"needs at least codebook_size training points. Lower codebook_size (e.g. "
                f"{2 ** int(math.log2(max(n_fit, 2)))}) or fit on more items (tokenizer_fit_on: all)."
            )
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.params["standardize"]:
            mean, std = standardization_stats(x, fit_mask)
            x = (x - mean) / std
        whiten_dim = int(self.params["pca_whiten_dim"] or 0)
        if whiten_dim:
            x = pca_whiten(x, whiten_dim, None if pca_fit_on == "all" else fit_mask)
        reduced_dim = 0
        if n_fit < x.shape[1]:
            # faiss's OPQ training crashes (heap corruption / invalid cluster assignment) with fewer training points
            # than dimensions: project onto the top principal components of the fit items first.
            reduced_dim = max(m, (n_fit // m) * m)
            if reduced_dim > n_fit:
                raise ValueError(f"OPQ: {n_fit} fit items are too few for num_digits {m}")
            logger.warning(f"OPQ: {n_fit} fit items < {x.shape[1]} dimensions; PCA to {reduced_dim} dimensions first")
            pca = faiss.PCAMatrix(x.shape[1], reduced_dim)
            pca.train(np.ascontiguousarray(x[fit_mask]))
            x = pca.apply(np.ascontiguousarray(x))
        pad = (-x.shape[1]) % m
        if pad:
            x = np.concatenate([x, np.zeros((len(x), pad), dtype=np.float32)], axis=1)
        d = x.shape[1]
        x = np.ascontiguousarray(x, dtype=np.float32)

        index = faiss.index_factory(d, f"OPQ{m},IVF1,PQ{m}x{nbits}", METRICS[metric])
        opq = faiss.downcast_VectorTransform(index.chain.at(0))
        ivfpq = faiss.downcast_index(faiss.extract_index_ivf(index))
        opq.niter = int(self.params["opq_niter"])
        # OPQ trains an internal PQ with 8 bits unless given one: give it ours (same nbits, seeded, no warnings).
        opq_pq = faiss.ProductQuantizer(d, m, nbits)
        for pq in (opq_pq, ivfpq.pq):
            pq.cp.seed = int(seed)
            pq.cp.min_points_per_centroid = 1
        ivfpq.pq.cp.niter = int(self.params["pq_niter"])
        # The sub-quantisers' k-means assign points with a GPU index when faiss has one (faiss_index.py); Python
        # owns these indexes, so the quantisers' pointers to them are cleared after training.
        assign = [flat_l2(d // m, n_fit) for _ in (opq_pq, ivfpq.pq)]
        opq_pq.assign_index, ivfpq.pq.assign_index = assign
        opq.pq = opq_pq
        index.train(np.ascontiguousarray(x[fit_mask]))
        opq.pq = opq_pq.assign_index = ivfpq.pq.assign_index = None  # opq_pq is owned by Python too

        rotated = opq.apply(x)
        self.coarse_centroid = ivfpq.quantizer.reconstruct(0).copy()  # IVF1's one cell; the PQ encodes x - it
        residual = np.ascontiguousarray(rotated - self.coarse_centroid[None, :], dtype=np.float32)
        codes = unpack_pq_codes(ivfpq.pq.compute_codes(residual), m, nbits)
        self.codebooks = faiss.vector_to_array(ivfpq.pq.centroids).reshape(m, codebook_size, d // m).copy()
        self.rotation = faiss.vector_to_array(opq.A).reshape(d, d).copy()
        self.fit_report = {"index": f"OPQ{m},IVF1,PQ{m}x{nbits}", "input_dim": int(d), "padded_dims": int(pad),
                           "pca_whiten_dim": whiten_dim, "pca_fit_on": pca_fit_on if whiten_dim else None,
                           "metric": metric, "pca_reduced_dim": reduced_dim}
        return torch.from_numpy(codes)
