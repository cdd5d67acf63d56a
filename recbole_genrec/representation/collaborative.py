"""Stage 1, collaborative representation: item embeddings of a RecBole model trained on the training split only.

LETTER aligns its tokenizer with 32-d item embeddings of a SASRec trained on the same training data; any method
that wants collaborative signals can call `item_cf_embeddings`. The model is RecBole's own class, trained by
RecBole's own Trainer on the plugin's training split (the histories the generative model will see), for a fixed
number of epochs and without the validation split, so nothing of the valid/test targets reaches the embeddings.

LightGCN trains on every interaction of the training split once, each user's first item included: BPR positives are
all the (user, item) pairs, not only the rows' targets (RecBole's sequential `inter_matrix` already adds the first
item to the graph, but its loop never samples it as a positive), and its negatives avoid the user's whole training
history (ColaRec's official CF input is its whole training interaction file).

Contract: float32 [n_items + 1, d]; row 0 (padding) is zero, and so is every item that never occurs in the training
split (never trained on a positive), so consumers can tell them apart by norm; with `cf_untrained_items: model`
those items keep the CF model's own output instead (LightGCN: their initial embedding, moved only as sampled
negatives), as ColaRec's official hierarchical_cluster.py clusters every row of its CF table.
Cached under a fingerprint of the training split's arrays, the model settings and the seed.
"""
import logging
import os
import time

import numpy as np

from recbole_genrec.cache import ArtifactCache, array_digest, fingerprint

logger = logging.getLogger("recbole_genrec")

# Defaults of `cf_params`, per CF model (`cf_params.model`). SASRec: LETTER's 32-d item embeddings with the dropout
# and lr of the strong CE SASRec baseline (methods.md). LightGCN (ColaRec's GID source): RecBole's defaults, BPR with
# one uniform negative. `epochs` is fixed: there is no validation-based early stopping here.
CF_DEFAULTS = {
    "SASRec": {
        "hidden_size": 32, "inner_size": 64, "n_layers": 2, "n_heads": 2, "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5, "learning_rate": 0.001, "train_batch_size": 2048, "epochs": 50,
    },
    "LightGCN": {
        "embedding_size": 64, "n_layers": 2, "reg_weight": 1e-05, "learning_rate": 0.001, "train_batch_size": 2048,
        "epochs": 50,
    },
}
WIDTH_KEY = {"SASRec": "hidden_size", "LightGCN": "embedding_size"}


def cf_settings(config) -> dict:
    given = dict(config["cf_params"] or {})
    model = given.get("model", "SASRec")
    if model not in CF_DEFAULTS:
        raise ValueError(f"cf_params.model must be one of {', '.join(CF_DEFAULTS)}, got {model!r}.")
    params = {"model": model, **CF_DEFAULTS[model], **given}
    unknown = sorted(set(params) - set(CF_DEFAULTS[model]) - {"model"})
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in `cf_params` for {model}. "
                         f"Known: {', '.join(CF_DEFAULTS[model])}.")
    return params


def item_cf_embeddings(config, dataset, train_dataset) -> np.ndarray:
    """Item embeddings [n_items + 1, hidden_size] of `cf_params.model` trained on `train_dataset` only (cached)."""
    from recbole_genrec.data.semantic_ids import train_item_mask

    params = cf_settings(config)
    inter = train_dataset.inter_feat
    list_field = train_dataset.iid_field + config["LIST_SUFFIX"]
    training_arrays = [inter[field].numpy() for field in (train_dataset.iid_field, list_field)]
    training_arrays_digests = [array_digest(array) for array in training_arrays]
    graph = [] if params["model"] == "SASRec" else ["every training interaction"]  # LightGCN's edges
    keep_untrained = config["cf_untrained_items"] == "model"
    untrained = ["untrained items: model output"] if keep_untrained else []  # the zeroed tables keep their keys
    key = fingerprint("cf", params, config["seed"], dataset.item_num, training_arrays_digests, *graph, *untrained)
    cache = ArtifactCache(config["cache_dir"], config["dataset"])

    def compute():
        start = time.time()
        embeddings = _train_cf_model(config, train_dataset, params)
        embeddings[0] = 0.0  # padding
        if not keep_untrained:
            embeddings[~train_item_mask(train_dataset)] = 0.0  # items never seen in training
        logger.info(f"Collaborative embeddings ({params['model']}, d={params[WIDTH_KEY[params['model']]]}, "
                    f"{params['epochs']} epochs on the training split) in {time.time() - start:.1f}s")
        return embeddings

    width = params[WIDTH_KEY[params["model"]]]
    inputs = {"cf_params": params, "seed": config["seed"], "training_split": fingerprint(training_arrays_digests),
              "cf_untrained_items": "model" if keep_untrained else "zero"}
    return cache.get_or_compute_array(f"cf-{params['model']}-d{width}", key, compute, n_items=dataset.item_num - 1,
                                      width=int(width), inputs=inputs)


def _train_cf_model(config, train_dataset, params) -> np.ndarray:
    import torch
    from recbole.data.dataloader import TrainDataLoader
    from recbole.sampler import Sampler
    from recbole.utils import init_seed

    from recbole_genrec.config import GenRecConfig
    from recbole_genrec.registry import get_model
    from recbole_genrec.trainer import GenRecTrainer

    # RecBole's own model, configured like a stand-alone run on the same data; the split object is reused, so the
    # CF model sees exactly the plugin's training split: SASRec its sequences (history length included), LightGCN
    # its (user, item) interactions, each a BPR positive with one uniform negative outside the user's history.
    sequential = params["model"] == "SASRec"
    if not sequential:
        train_dataset = train_dataset.copy(training_interactions(train_dataset))
    overrides = {key: value for key, value in params.items() if key != "model"}
    negatives = None if sequential else {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False,
                                         "candidate_num": 0}
    cf_config = GenRecConfig(model=params["model"], dataset=config["dataset"], config_dict={
        "data_path": os.path.dirname(config["data_path"]),
        "load_col": config["load_col"], "eval_args": config["eval_args"], "seed": config["seed"],
        "MAX_ITEM_LIST_LENGTH": config["MAX_ITEM_LIST_LENGTH"], "device": str(config["device"]),
        "checkpoint_dir": config["checkpoint_dir"], "show_progress": config["show_progress"],
        "loss_type": "CE", "train_neg_sample_args": negatives, "state": config["state"], **overrides,
    })
    init_seed(cf_config["seed"], cf_config["reproducibility"])
    sampler = None if sequential else Sampler(["train"], [train_dataset], "uniform").set_phase("train")
    train_data = TrainDataLoader(cf_config, train_dataset, sampler, shuffle=True)
    model = get_model(params["model"])(cf_config, train_dataset).to(cf_config["device"])
    trainer = GenRecTrainer(cf_config, model)  # RecBole's loop, with the plugin's clear error on a diverging loss
    logger.info(f"Training {params['model']} ({params['epochs']} epochs) for collaborative item embeddings")
    trainer.fit(train_data, valid_data=None, saved=False, show_progress=config["show_progress"])
    model.eval()
    with torch.no_grad():
        # LightGCN's item representation is its propagated embedding (the mean over layers), SASRec's its table
        embeddings = model.item_embedding.weight if sequential else model.forward()[1]
        return embeddings.detach().float().cpu().numpy().copy()


def training_interactions(train_dataset):
    """Every (user, item) pair of the training split, once: each row's target and the items of its history. An
    Interaction of the user and item fields, sorted by user then item, and a history length of 0 (no row is a
    first-item row for RecBole's sequential `inter_matrix`, which would add those items again)."""
    import torch
    from recbole.data.interaction import Interaction

    inter = train_dataset.inter_feat
    uid, iid = train_dataset.uid_field, train_dataset.iid_field
    history = inter[iid + train_dataset.config["LIST_SUFFIX"]]
    users = torch.cat([inter[uid], inter[uid].repeat_interleave(history.shape[1])])
    items = torch.cat([inter[iid], history.flatten()])
    real = items > 0
    pairs = torch.unique(users[real] * train_dataset.item_num + items[real])  # sorted
    return Interaction({uid: pairs // train_dataset.item_num, iid: pairs % train_dataset.item_num,
                        train_dataset.item_list_length_field: torch.zeros_like(pairs)})
