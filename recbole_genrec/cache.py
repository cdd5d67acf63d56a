"""One on-disk cache for every derived artefact (text embeddings, CF embeddings, semantic IDs).

Keys are fingerprints of the inputs (file contents, not paths or mtimes), so a cache built on one machine is
valid on another: compute text embeddings where the encoder is installed, copy `cache_dir`, reuse it on a GPU host.

Every cache file `<kind>-<key>.<ext>` has a sidecar `<kind>-<key>.<ext>.meta.json` that records what the file must
hold: its kind and key (the fingerprint of its inputs) with a readable description of those inputs, the item count,
the shape and dtype, the size in bytes and the sha1 of the file. A load checks the file against its sidecar (size and
sha1: a truncated or modified file), reads it, and checks the value against what the caller expects (one row per
item plus the padding row, the width where it is known, finite values, codes inside their vocabularies, ...).
A file without a sidecar (written before sidecars existed, like the shipped amazon-beauty text embeddings) is
accepted when it reads and passes the caller's checks.

A file that fails: in `cache_dir`, a warning names it and the reason, it is deleted and rebuilt. Among the
artefacts shipped with a dataset (`<data_path>/<dataset>/cache/`, read-only), the run stops with an error naming it:
those files are never rewritten. A value is checked before it is written (a computation that went wrong is not
cached), and writes go to a temporary file in the same folder, then `os.replace`: the data file first, then its
sidecar, so an interrupted run never leaves a truncated file under a cache name.
"""
import contextlib
import hashlib
import json
import logging
import os
import time
import uuid

import numpy as np

logger = logging.getLogger("recbole_genrec")

META_SUFFIX = ".meta.json"
META_FORMAT = 1


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


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path in `path`'s folder; when the block succeeds it is synced to disk and moved onto `path`
    with `os.replace` (atomic on one file system), when it fails it is removed. Readers see the old file or the
    whole new one, never a partial write."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        descriptor = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class CacheFileError(ValueError):
    """A shipped (read-only) artefact that fails its checks."""


class ItemArrays:
    """Cache format of item arrays: float32 [n_items + 1, width] `.npy`, row 0 (padding) all zeros, finite."""

    ext = "npy"

    def write(self, value, path):
        with open(path, "wb") as handle:
            np.save(handle, value, allow_pickle=False)

    def read(self, path):
        return np.load(path, allow_pickle=False)

    def shape(self, value):
        return [int(size) for size in np.shape(value)]

    def dtype(self, value):
        return str(getattr(value, "dtype", type(value).__name__))

    def problems(self, value):
        if not isinstance(value, np.ndarray) or value.dtype != np.float32:
            return f"dtype {self.dtype(value)}, expected float32"
        bad_rows = np.flatnonzero(~np.isfinite(value).all(1))
        if len(bad_rows):
            return f"NaN or infinite values in {len(bad_rows)} rows (e.g. rows {bad_rows[:5].tolist()})"
        if np.any(value[0] != 0):
            return "a non-zero row 0 (the padding row must be zeros: the rows are not aligned with the item ids)"
        return None


ITEM_ARRAYS = ItemArrays()


class ArtifactCache:
    """`<cache_dir>/<dataset>/<kind>-<key>.<ext>` (+ `.meta.json`), checked on load, written atomically (parallel Ray
    trials may race).

    Files are also looked up, read-only, in `shipped_dir` (`<data_path>/<dataset>/cache`): artefacts shipped with a
    dataset, e.g. text embeddings for hosts where the text encoder is not installed.

    A format (`ITEM_ARRAYS`, `data.semantic_ids.SEMANTIC_IDS`) has `ext`, `write(value, path)`, `read(path)`,
    `shape(value)`, `dtype(value)` and `problems(value) -> str | None`; the cache adds the checks every format
    shares: a 2-D value with `n_items + 1` rows and, when given, `width` columns."""

    def __init__(self, cache_dir: str, dataset: str, shipped_dir: str | None = None):
        self.root = os.path.join(os.path.abspath(cache_dir), dataset)
        self.shipped_dir = shipped_dir

    def path(self, kind: str, key: str, ext: str) -> str:
        return os.path.join(self.root, f"{kind}-{key}.{ext}")

    @staticmethod
    def meta_path(path: str) -> str:
        return path + META_SUFFIX

    # ---- reading -----------------------------------------------------------------------------------------------
    def load(self, kind, key, fmt, n_items, width=None):
        """The cached value, or None when there is none (or the one in `cache_dir` was bad: warned and deleted).
        Raises CacheFileError for a bad shipped artefact."""
        path = self.path(kind, key, fmt.ext)
        shipped = os.path.join(self.shipped_dir, os.path.basename(path)) if self.shipped_dir else None
        for candidate, read_only in ((path, False), (shipped, True)):
            if not candidate or not os.path.isfile(candidate):
                continue
            value, problem = self._read_checked(candidate, kind, key, fmt, n_items, width)
            if problem is None:
                logger.info(f"Cache hit: {kind} from [{candidate}]")
                return value
            if read_only:
                raise CacheFileError(
                    f"Shipped artefact [{candidate}] is unusable: {problem}. Files in [{self.shipped_dir}] are "
                    f"read-only inputs and are never rewritten: restore it (e.g. `git checkout -- {candidate}` or a "
                    f"fresh copy of the dataset), or delete it to compute {kind} into [{self.root}]."
                )
            logger.warning(f"Cache file [{candidate}] is unusable: {problem}. It is deleted and {kind} is rebuilt.")
            self._discard(candidate)
        return None

    def _read_checked(self, path, kind, key, fmt, n_items, width):
        """-> (value, None) or (None, what is wrong)."""
        meta_path = self.meta_path(path)
        meta = None
        if os.path.isfile(meta_path):
            try:
                with open(meta_path, encoding="utf-8") as handle:
                    meta = json.load(handle)
                if not isinstance(meta, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as error:
                return None, f"its metadata [{meta_path}] is unreadable ({error})"
            if (meta.get("kind"), meta.get("key")) != (kind, key):
                return None, (f"its metadata [{meta_path}] describes {meta.get('kind')}-{meta.get('key')}, not "
                              f"{kind}-{key}")
            size = os.path.getsize(path)
            if size != meta.get("bytes"):
                return None, f"{size} bytes where its metadata records {meta.get('bytes')} (truncated or overwritten)"
            if file_digest(path) != meta.get("sha1"):
                return None, "its sha1 differs from the one its metadata records (modified after it was written)"
        try:
            value = fmt.read(path)
        except Exception as error:  # any failure to read (truncated zip, bad header, missing keys) = a bad file
            return None, f"unreadable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        problem = self._value_problem(fmt, value, n_items, width)
        if problem is None and meta is not None:
            recorded = (meta.get("shape"), meta.get("dtype"), meta.get("n_items"))
            if recorded != (fmt.shape(value), fmt.dtype(value), n_items):
                problem = (f"shape {fmt.shape(value)} {fmt.dtype(value)} for {n_items} items, its metadata records "
                           f"shape {recorded[0]} {recorded[1]} for {recorded[2]} items")
        return (None, problem) if problem else (value, None)

    @staticmethod
    def _value_problem(fmt, value, n_items, width):
        try:
            shape = fmt.shape(value)
        except Exception as error:
            return f"no shape ({type(error).__name__}: {error})"
        if len(shape) != 2:
            return f"shape {shape}, expected 2 dimensions [{n_items + 1}, width]"
        if shape[0] != n_items + 1:
            return f"{shape[0]} rows, expected {n_items + 1} ({n_items} items + the padding row)"
        if width is not None and shape[1] != width:
            return f"{shape[1]} columns, expected {width}"
        if shape[1] < 1:
            return "no columns"
        return fmt.problems(value)

    def _discard(self, path):
        for name in (path, self.meta_path(path)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)

    # ---- writing -----------------------------------------------------------------------------------------------
    def save(self, kind, key, fmt, value, n_items, width=None, inputs=None):
        """Check `value` (a wrong one raises, nothing is written), then write it and its sidecar atomically."""
        path = self.path(kind, key, fmt.ext)
        problem = self._value_problem(fmt, value, n_items, width)
        if problem:
            raise ValueError(f"The computed {kind} has {problem}: not caching it in [{path}].")
        meta_path = self.meta_path(path)
        with contextlib.suppress(FileNotFoundError):
            os.remove(meta_path)  # a stale sidecar never describes the new file, even for a moment
        with atomic_path(path) as tmp:
            fmt.write(value, tmp)
            size, digest = os.path.getsize(tmp), file_digest(tmp)
        meta = {"format": META_FORMAT, "kind": kind, "key": key, "file": os.path.basename(path), "bytes": size,
                "sha1": digest, "n_items": n_items, "shape": fmt.shape(value), "dtype": fmt.dtype(value),
                "inputs": inputs or {}, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with atomic_path(meta_path) as tmp:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(meta, handle, indent=1, sort_keys=True, default=str)
        logger.info(f"Cached {kind} in [{path}]")
        return path

    def get_or_compute(self, kind, key, fmt, compute, n_items, width=None, inputs=None):
        value = self.load(kind, key, fmt, n_items, width)
        if value is None:
            value = compute()
            self.save(kind, key, fmt, value, n_items, width, inputs)
        return value

    def get_or_compute_array(self, kind, key, compute, n_items, width=None, inputs=None):
        """Item arrays float32 [n_items + 1, width] (row 0 = padding)."""
        return self.get_or_compute(kind, key, ITEM_ARRAYS, compute, n_items, width, inputs)
