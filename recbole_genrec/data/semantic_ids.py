"""The tokenizer preprocessing hook: item vectors + training split -> semantic IDs, cached by fingerprint."""
import logging
import os
import time

import numpy as np

from recbole_genrec.cache import ArtifactCache, array_digest, fingerprint

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


def fit_semantic_ids(config, dataset, vectors, fit_mask=None, tokenizer=None, tokenizer_params=None, kind="sid",
                     collaborative=None):
    """Fit `tokenizer` (default: config['tokenizer'] with config['tokenizer_params']) on `vectors` (and, for
    tokenizers that use them, the `collaborative` item vectors) and return its SemanticIds. Repeated runs and
    tuning trials with the same inputs load the cached result instead of refitting.
    The IDs are also exported as JSON (item token -> codes) beside the cache file."""
    from recbole_genrec.tokenization import SemanticIds, build_tokenizer

    name = tokenizer or config["tokenizer"]
    params = dict(config["tokenizer_params"] or {}) if tokenizer_params is None else dict(tokenizer_params)
    params.setdefault("device", str(config["device"]))
    key_params = {k: v for k, v in params.items() if k != "device"}  # same codes wherever they were fitted
    seed = config["seed"]
    key = fingerprint(kind, name, key_params, seed, array_digest(vectors),
                      array_digest(fit_mask) if fit_mask is not None else None,
                      array_digest(collaborative) if collaborative is not None else None)
    cache = ArtifactCache(config["cache_dir"], config["dataset"])
    path = cache.path(f"{kind}-{name}", key, "pt")
    if os.path.isfile(path):
        semantic_ids = SemanticIds.load(path)
        logger.info(f"Cache hit: semantic IDs ({name}) from [{path}]; tokenizer not refitted")
        semantic_ids.cache_path, semantic_ids.fit_seconds = path, 0.0
        return check_collapse(config, semantic_ids)
    start = time.time()
    logger.info(f"Fitting tokenizer {name} {key_params} on {int(fit_mask.sum()) if fit_mask is not None else len(vectors) - 1} items")
    semantic_ids = build_tokenizer(name, params).fit(vectors, fit_mask=fit_mask, seed=seed, collaborative=collaborative)
    fit_seconds = time.time() - start
    os.makedirs(cache.root, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    semantic_ids.save(tmp)
    os.replace(tmp, path)
    semantic_ids.export(list(dataset.field2id_token[dataset.iid_field]), path[:-3] + ".json")
    logger.info(f"Semantic IDs fitted in {fit_seconds:.1f}s, saved to [{path}] and exported to [{path[:-3]}.json]")
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
