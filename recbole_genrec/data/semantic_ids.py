"""The tokenizer preprocessing hook: item vectors + training split -> semantic IDs, cached by fingerprint (cache.py)."""
import logging
import os
import time

import numpy as np

from recbole_genrec.cache import ArtifactCache, array_digest, atomic_path, fingerprint

logger = logging.getLogger("recbole_genrec")


def train_item_mask(train_dataset) -> np.ndarray:
    """bool [n_items + 1]: items that occur in the training split (as a target or in a history)."""
    inter = train_dataset.inter_feat
    mask = np.zeros(train_dataset.item_num, dtype=bool)
    mask[inter[train_dataset.iid_field].numpy()] = True
    list_field = train_dataset.iid_field + train_dataset.config["LIST_SUFFIX"]
    if list_field in inter:
        mask[np.unique(inter[list_field].numpy())] = True
    mask[0] = False
    return mask


class SemanticIdsFormat:
    """Cache format of semantic IDs (`SemanticIds.save`, a `.pt` of plain tensors and lists): codes long
    [n_items + 1, L], row 0 (padding) zeros, one vocabulary size per level, every code inside its level's vocabulary
    (a code outside it would index past the model's embedding table)."""

    ext = "pt"

    def write(self, value, path):
        value.save(path)

    def read(self, path):
        from recbole_genrec.tokenization import SemanticIds

        return SemanticIds.load(path)

    def shape(self, value):
        return [int(size) for size in value.codes.shape]

    def dtype(self, value):
        return str(value.codes.dtype).replace("torch.", "")

    def problems(self, value):
        import torch

        codes, vocab_sizes = value.codes, list(value.vocab_sizes)
        if codes.dtype != torch.long:
            return f"codes of dtype {self.dtype(value)}, expected int64"
        if len(vocab_sizes) != codes.shape[1]:
            return f"{len(vocab_sizes)} vocabulary sizes for {codes.shape[1]} code levels"
        if torch.any(codes[0] != 0):
            return "a non-zero row 0 (the padding row must be zeros: the rows are not aligned with the item ids)"
        limits = torch.tensor(vocab_sizes, dtype=torch.long)
        outside = ((codes[1:] < 0) | (codes[1:] >= limits)).any(1).nonzero().flatten()
        if len(outside):
            return (f"codes outside their level's vocabulary {vocab_sizes} for {len(outside)} items (e.g. internal ids "
                    f"{(outside[:5] + 1).tolist()})")
        return None


SEMANTIC_IDS = SemanticIdsFormat()


def check_tokenizer_inputs(n_items, vectors, fit_mask=None, collaborative=None):
    """The tokenizer's inputs have one row per item of the dataset (+ padding), before anything is fitted or cached:
    vectors of other items (a stale or foreign representation) would fit codes on the wrong rows."""
    for name, array in (("item vectors", vectors), ("fit_mask", fit_mask), ("collaborative vectors", collaborative)):
        if array is None:
            continue
        shape = tuple(np.shape(array))
        if not shape or shape[0] != n_items + 1 or (name != "fit_mask" and len(shape) != 2):
            expected = f"[{n_items + 1}]" if name == "fit_mask" else f"[{n_items + 1}, d]"
            raise ValueError(f"The tokenizer's {name} have shape {list(shape)}, expected {expected} (the dataset's "
                             f"{n_items} items + the padding row): they do not belong to this dataset's items. "
                             f"Nothing was fitted or cached.")


def fit_semantic_ids(config, dataset, vectors, fit_mask=None, tokenizer=None, tokenizer_params=None, kind="sid",
                     collaborative=None):
    """Fit `tokenizer` (default: config['tokenizer'] with config['tokenizer_params']) on `vectors` (and, for
    tokenizers that use them, the `collaborative` item vectors) and return its SemanticIds. Repeated runs and
    tuning trials with the same inputs load the cached result instead of refitting (checked on load: cache.py).
    The IDs are also exported as JSON (item token -> codes) beside the cache file."""
    from recbole_genrec.tokenization import build_tokenizer

    name = tokenizer or config["tokenizer"]
    params = dict(config["tokenizer_params"] or {}) if tokenizer_params is None else dict(tokenizer_params)
    params.setdefault("device", str(config["device"]))
    tokenizer_obj = build_tokenizer(name, params)  # refuses unknown parameters before anything is read or fitted
    # The key holds every parameter as the tokenizer resolved it (its defaults included) and the tokenizer's
    # revision: a changed default or fit then refits instead of loading IDs fitted under the old one. Not the
    # device: same codes wherever they were fitted.
    key_params = {k: v for k, v in tokenizer_obj.params.items() if k != "device"}
    item_tokens = list(dataset.field2id_token[dataset.iid_field])
    n_items = len(item_tokens) - 1
    check_tokenizer_inputs(n_items, vectors, fit_mask, collaborative)
    seed = config["seed"]
    digests = {"vectors": array_digest(vectors), "fit_mask": array_digest(fit_mask) if fit_mask is not None else None,
               "collaborative": array_digest(collaborative) if collaborative is not None else None}
    revision = tokenizer_obj.revision  # a fit that changed under the same parameters refits
    key = fingerprint(kind, name, revision, key_params, seed, digests["vectors"], digests["fit_mask"],
                      digests["collaborative"])
    cache = ArtifactCache(config["cache_dir"], config["dataset"])
    cache_kind = f"{kind}-{name}"
    path = cache.path(cache_kind, key, SEMANTIC_IDS.ext)
    export_path = path[:-3] + ".json"
    semantic_ids = cache.load(cache_kind, key, SEMANTIC_IDS, n_items=n_items)
    if semantic_ids is not None:
        fit_seconds = 0.0
        if not os.path.isfile(export_path):  # the run that fitted them stopped before exporting
            with atomic_path(export_path) as tmp:
                semantic_ids.export(item_tokens, tmp)
    else:
        start = time.time()
        logger.info(f"Fitting tokenizer {name} {key_params} on "
                    f"{int(fit_mask.sum()) if fit_mask is not None else n_items} items")
        semantic_ids = tokenizer_obj.fit(vectors, fit_mask=fit_mask, seed=seed, collaborative=collaborative)
        fit_seconds = time.time() - start
        cache.save(cache_kind, key, SEMANTIC_IDS, semantic_ids, n_items=n_items,
                   inputs={"tokenizer": name, "revision": revision, "tokenizer_params": key_params, "seed": seed,
                           **digests})
        with atomic_path(export_path) as tmp:
            semantic_ids.export(item_tokens, tmp)
        logger.info(f"Semantic IDs fitted in {fit_seconds:.1f}s, saved to [{path}] and exported to [{export_path}]")
    semantic_ids.cache_path, semantic_ids.fit_seconds = path, fit_seconds
    return check_collapse(config, semantic_ids)


def check_collapse(config, semantic_ids):
    """A collapsed codebook (most items on few codes, hidden behind a long collision digit) stops the run before
    training, unless `sid_collapse: warn`. The IDs stay cached, so switching to `warn` does not refit."""
    from recbole_genrec.tokenization import collapse_warning

    problem = collapse_warning(semantic_ids.quality)
    if problem and config["sid_collapse"] == "warn":
        logger.warning(problem)
    elif problem:
        raise ValueError(f"{problem} The IDs are kept in [{semantic_ids.cache_path}]: to train on them anyway, set "
                         f"`sid_collapse: warn` (no refit).")
    return semantic_ids
