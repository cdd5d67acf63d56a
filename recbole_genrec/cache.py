"""One on-disk cache for every derived artefact (text embeddings, CF embeddings, semantic IDs).

Keys are fingerprints of the inputs (file contents, not paths or mtimes), so a cache built on one machine is
valid on another: compute text embeddings where the encoder is installed, copy `cache_dir`, reuse it on a GPU host.
"""
import hashlib
import json
import logging
import os

import numpy as np

logger = logging.getLogger("recbole_genrec")


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-serialisable parts (dict keys sorted)."""
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha1(payload).hexdigest()[:16]


def file_digest(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def array_digest(array) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha1(array.tobytes() + str(array.shape).encode() + str(array.dtype).encode()).hexdigest()


class ArtifactCache:
    """`<cache_dir>/<dataset>/<kind>-<key>.<ext>` with atomic writes (parallel Ray trials may race).

    Arrays are also looked up, read-only, in `shipped_dir` (`<data_path>/<dataset>/cache`): artefacts shipped with a
    dataset, e.g. text embeddings for hosts where the text encoder is not installed."""

    def __init__(self, cache_dir: str, dataset: str, shipped_dir: str | None = None):
        self.root = os.path.join(os.path.abspath(cache_dir), dataset)
        self.shipped_dir = shipped_dir

    def path(self, kind: str, key: str, ext: str) -> str:
        return os.path.join(self.root, f"{kind}-{key}.{ext}")

    def load_array(self, kind, key):
        path = self.path(kind, key, "npy")
        shipped = os.path.join(self.shipped_dir, os.path.basename(path)) if self.shipped_dir else None
        for candidate in (path, shipped):
            if candidate and os.path.isfile(candidate):
                logger.info(f"Cache hit: {kind} from [{candidate}]")
                return np.load(candidate)
        return None

    def save_array(self, kind, key, array):
        path = self.path(kind, key, "npy")
        os.makedirs(self.root, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}.npy"
        np.save(tmp, array)
        os.replace(tmp, path)
        logger.info(f"Cached {kind} in [{path}]")
        return path

    def get_or_compute_array(self, kind, key, compute):
        array = self.load_array(kind, key)
        if array is None:
            array = compute()
            self.save_array(kind, key, array)
        return array
