"""RQ-KMeans: residual k-means on faiss. Level by level, cluster the current residuals of the fit items, assign
every item to its nearest centroid and subtract it. About the quality of an RQ-VAE at a fraction of the cost, and
it cannot collapse (every centroid is the mean of a non-empty cluster)."""
import logging

import numpy as np
import torch

from recbole_genrec.tokenization.base import Tokenizer, standardization_stats
from recbole_genrec.tokenization.kmeans import kmeans, nearest_centroid, squared_distances

logger = logging.getLogger("recbole_genrec")


class RQKMeansTokenizer(Tokenizer):
    name = "RQKMeans"
    default_params = {"num_levels": 3, "codebook_size": 256, "niter": 50, "standardize": True}

    def _fit_codes(self, vectors, fit_mask, seed):
        num_levels, codebook_size = int(self.params["num_levels"]), int(self.params["codebook_size"])
        if self.params["standardize"]:
            mean, std = standardization_stats(vectors, fit_mask)
            residuals = (vectors - mean) / std
        else:
            residuals = vectors.copy()
        codes = np.zeros((len(vectors), num_levels), dtype=np.int64)
        self.codebooks = []
        for level in range(num_levels):
            centroids, _ = kmeans(residuals[fit_mask], codebook_size, niter=self.params["niter"], seed=seed + level)
            if len(centroids) < codebook_size:
                logger.info(
                    f"RQKMeans level {level + 1}: only {len(centroids)} distinct residuals among {int(fit_mask.sum())} "
                    f"fit items, so {len(centroids)} clusters instead of {codebook_size}"
                )
            if level == num_levels - 1 and self.needs_last_level_distances:
                self.last_level_distances = _padded_distances(residuals, centroids, codebook_size)
            codes[:, level], _ = nearest_centroid(residuals, centroids)
            residuals = residuals - centroids[codes[:, level]]
            self.codebooks.append(centroids)
        return torch.from_numpy(codes)


def _padded_distances(residuals, centroids, codebook_size):
    """[n, codebook_size] distances; codes that have no centroid (k was capped) are infinitely far."""
    distances = np.full((len(residuals), codebook_size), np.inf, dtype=np.float32)
    distances[:, : len(centroids)] = squared_distances(residuals, centroids)
    return distances
