r"""Our TIGER, LETTER and RPG beside cornac 3.0.1's (an implementation nobody here wrote), on identical inputs.

    python benchmarks/peers.py --dataset=ml-100k --models=TIGER,LETTER,RPG --seeds=3 --out=results/peers-ml100k
    python benchmarks/peers.py --dataset=amazon-beauty --models=TIGER --seeds=1 --epochs=1 --train_batches=50 \
        --out=results/peers-beauty            # speed at a fixed budget
    python benchmarks/peers.py --dataset=tiny-beauty --data_path=tests/fixtures --quick --out=/tmp/peers

What is shared, so that a difference in the figures comes from training and decoding alone:
- the split: RecBole's leave-one-out (`LS: valid_and_test`, `order: TO`). cornac gets each user's training items as
  one session, the validation session = those items + the validation target, and is handed the test users'
  histories exactly as RecBole's test loader holds them (truncated to the same history length);
- the semantic IDs: ours, exported into cornac (cornac's own tokenizer is bypassed; for TIGER, cornac re-derives its
  collision digit and the run stops unless its table equals ours), and the same item embeddings as its item
  features; cornac's item index = RecBole's internal item id - 1 (checked);
- the architecture and recipe: one settings table per model (`SETTINGS`), translated into each implementation's
  options and printed side by side before the runs;
- the scorer: cornac's top-K lists go through the plugin's evaluator path (`GenRecCollector` + RecBole's
  `Evaluator`: RecBole's Recall / NDCG classes), and cornac's own Recall / NDCG on the same lists are reported as a
  check of the scorer (`cornac_recall@10`, `cornac_ndcg@10`).

Design differences that stay (they are what the comparison measures, see BENCHMARKS.md):
- TIGER: cornac has one output head per level over HF's `T5Stack` and a learned BOS vector, loss summed over levels;
  ours ties one shared vocabulary (T5 v1.0), start token 0, loss averaged over tokens. cornac batches consecutive
  prefixes of the same sessions (its `session_seq_iter`); RecBole shuffles all prefixes.
- LETTER: cornac uses HF's `T5ForConditionalGeneration` with an EOS token after the 4 codes (the released code's
  layout) and selects the checkpoint on validation loss (the released HF Trainer); ours on validation NDCG@10.
- RPG: both train each session once with the loss at every position (the official code; ours with
  `rpg_all_positions: True`, RPG.yaml's default), over the same (history, target) pairs as RecBole's prefix rows.

Each (model, implementation, seed) runs in its own process, so `peak_rss_mb` is that row's own peak. Rows are
appended to `<out>/peers.csv` as they finish (a run cut short keeps what it finished).
"""
import argparse
import csv
import datetime
import json
import math
import os
import resource
import subprocess
import sys
import time

import common

IMPLEMENTATIONS = ("recbole_genrec", "cornac")
COLUMNS = ["model", "implementation", "seed", "dataset", "recall@5", "recall@10", "ndcg@5", "ndcg@10",
           "cornac_recall@10", "cornac_ndcg@10", "valid_ndcg@10", "valid_curve", "epochs", "train_sequences",
           "train_seq_per_s", "test_users", "test_users_per_s", "peak_rss_mb", "data_seconds", "train_seconds",
           "valid_seconds", "test_seconds", "wall_seconds", "hf_users", "ours_users_per_s_same_users",
           "hf_generate_users_per_s", "hf_same_topk_lists", "threads", "hardware", "date", "command"]

# The CPU size of the comparison (one table per model, applied to both implementations). Tokenizers are the cheap
# ones of the quick-start profile: the IDs are shared, so their quality does not separate the implementations.
# The CPU quick start's widths (1+1 layers, d64, history 10): 2+2 layers at history 20 train at ~360 seq/s here
# (4.5 minutes per ml-100k epoch), too slow for 3 seeds x 2 implementations x 3 models on 2 cores.
COMMON = {"MAX_ITEM_LIST_LENGTH": 10, "d_model": 64, "d_ff": 256, "dropout": 0.1, "learning_rate": 0.002,
          "weight_decay": 0.01, "train_batch_size": 256, "warmup_steps": 100, "epochs": 8, "beam_size": 20,
          # 3 x 32 residual k-means codes leave 40-55% of ml-100k's items on a shared code (the collision digit then
          # makes every ID unique): the collapse check's threshold, not a failure of the tokenizer.
          "sid_collapse": "warn"}
SETTINGS = {
    "TIGER": {**COMMON, "num_heads": 4, "d_kv": 16, "num_encoder_layers": 1, "num_decoder_layers": 1,
              "tokenizer": "RQKMeans",
              "tokenizer_params": {"num_levels": 3, "codebook_size": 32, "niter": 25, "collision": "append_digit"}},
    "LETTER": {**COMMON, "num_heads": 4, "d_kv": 16, "num_encoder_layers": 1, "num_decoder_layers": 1,
               "ce_temperature": 1.0,
               "cf_params": {"hidden_size": 32, "epochs": 3},
               "tokenizer_params": {"num_levels": 4, "codebook_size": 32, "latent_dim": 32,
                                    "hidden_dims": [256, 128, 64], "epochs": 150, "n_clusters": 4,
                                    "collision": "reassign_last_level"}},
    "RPG": {**COMMON, "num_heads": 4, "num_layers": 2, "embd_dropout": 0.5, "attn_dropout": 0.5,
            "resid_dropout": 0.0, "rpg_temperature": 0.03, "rpg_inference": "exact",
            "tokenizer_params": {"num_digits": 8, "codebook_size": 64, "pca_whiten_dim": 0, "standardize": False,
                                 "collision": "none"}},
}
# --quick: the smoke test's sizes (one epoch, tiny widths).
QUICK = {"d_model": 32, "d_ff": 64, "num_heads": 2, "d_kv": 16, "num_encoder_layers": 1, "num_decoder_layers": 1,
         "num_layers": 1, "epochs": 1, "train_batch_size": 256, "warmup_steps": 10, "beam_size": 10,
         "sid_collapse": "warn"}
QUICK_TOKENIZER = {"TIGER": {"codebook_size": 8}, "LETTER": {"codebook_size": 8, "epochs": 20},
                   "RPG": {"num_digits": 4, "codebook_size": 16}}
# The plugin's recipe keys every run sets the same way: validation NDCG@10 after every epoch, best checkpoint kept,
# no early exit (cornac's TIGER has none), cosine decay after a linear warm-up, no gradient clipping (cornac's
# TIGER has none; its LETTER and RPG clip at 1.0, so ours does too for those two).
PROTOCOL = {"eval_step": 1, "valid_metric": "NDCG@10", "topk": [5, 10], "lr_scheduler": "cosine", "learner": "adamw",
            "show_progress": False, "cold_start_eval": False}
CLIP = {"TIGER": None, "LETTER": {"max_norm": 1.0}, "RPG": {"max_norm": 1.0}}


def settings_for(model, quick=False, overrides=None):
    settings = json.loads(json.dumps(SETTINGS[model]))  # deep copy
    if quick:
        settings.update({k: v for k, v in QUICK.items() if k in settings or k == "sid_collapse"})
        settings["tokenizer_params"].update(QUICK_TOKENIZER[model])
        if model == "LETTER":
            settings["cf_params"]["epochs"] = 1
    settings.update(overrides or {})
    return settings


def plugin_config(model, settings, seed, data_path=None):
    """The plugin's config_dict for this row: the settings, the protocol, no early exit."""
    config = {**settings, **PROTOCOL, "seed": seed, "stopping_step": int(settings["epochs"]) + 1,
              "checkpoint_dir": os.path.join("saved", "peers")}
    if model in CLIP:  # matched to cornac's; other models keep their own recipe's clipping
        config["clip_grad_norm"] = CLIP[model]
    if data_path:
        config["data_path"] = data_path
    return config


def cornac_options(model, settings, seed, n_levels, codebook_size, train_rows=None, val_sample=None):
    """The same settings in cornac's option names; `train_rows` (training sequences) turns our warm-up steps into
    LETTER's warm-up ratio."""
    common = {
        "max_len": settings["MAX_ITEM_LIST_LENGTH"], "n_epochs": settings["epochs"],
        "learning_rate": settings["learning_rate"], "weight_decay": settings["weight_decay"],
        "batch_size": settings["train_batch_size"], "lr_schedule": "cosine", "model_selection": "best",
        "val_metric": "ndcg", "val_k": 10, "val_eval_every": 1, "val_sample": val_sample, "seed": seed, "device": "cpu",
        "d_model": settings["d_model"],
    }
    if model == "RPG":
        return {**common, "n_codebook": n_levels, "codebook_size": codebook_size, "pca_dim": 0,
                "n_layer": settings["num_layers"], "n_head": settings["num_heads"], "n_inner": settings["d_ff"],
                "embd_dropout": settings["embd_dropout"], "attn_dropout": settings["attn_dropout"],
                "resid_dropout": settings["resid_dropout"], "temperature": settings["rpg_temperature"],
                "warmup_steps": settings["warmup_steps"], "max_grad_norm": 1.0, "scoring": "exact",
                "n_beams": settings["beam_size"]}
    seq2seq = {**common, "d_ff": settings["d_ff"], "num_heads": settings["num_heads"], "d_kv": settings["d_kv"],
               "num_enc_layers": settings["num_encoder_layers"], "num_dec_layers": settings["num_decoder_layers"],
               "dropout": settings["dropout"], "scoring": "beam", "n_beams": settings["beam_size"],
               "rqvae_num_levels": n_levels, "rqvae_codebook_size": codebook_size}
    if model == "TIGER":
        return {**seq2seq, "warmup_steps": settings["warmup_steps"]}
    # LETTER: warm-up by ratio in cornac (the released trainer); the same number of warm-up steps expressed as one.
    batch = settings["train_batch_size"]
    updates = math.ceil((train_rows or batch) / batch) * settings["epochs"]
    return {**seq2seq, "warmup_ratio": min(1.0, settings["warmup_steps"] / updates), "cf_weight": 0.0,
            "ranking_temperature": settings["ce_temperature"], "gradient_accumulation_steps": 1,
            "max_grad_norm": 1.0, "letter_base_vocab_size": 3, "early_stopping_patience": None}


def side_by_side(model, settings, n_levels, codebook_size, seed=0):
    """Rows (setting, ours, cornac's) for the printed check."""
    ours = plugin_config(model, settings, seed)
    theirs = cornac_options(model, settings, seed, n_levels, codebook_size)
    pairs = [("history", "MAX_ITEM_LIST_LENGTH", "max_len"), ("d_model", "d_model", "d_model"),
             ("FFN", "d_ff", "n_inner" if model == "RPG" else "d_ff"),
             ("heads", "num_heads", "n_head" if model == "RPG" else "num_heads"),
             ("dropout", "dropout", "dropout"), ("optimiser lr", "learning_rate", "learning_rate"),
             ("weight decay", "weight_decay", "weight_decay"), ("batch", "train_batch_size", "batch_size"),
             ("epochs", "epochs", "n_epochs"), ("warm-up steps", "warmup_steps", "warmup_steps"),
             ("beam", "beam_size", "n_beams"), ("gradient clip", "clip_grad_norm", "max_grad_norm")]
    if model == "RPG":
        pairs += [("layers", "num_layers", "n_layer"), ("temperature", "rpg_temperature", "temperature"),
                  ("embd/attn/resid dropout", "embd_dropout", "embd_dropout"), ("scoring", "rpg_inference", "scoring")]
        pairs = [p for p in pairs if p[0] != "dropout"]
    else:
        pairs += [("encoder layers", "num_encoder_layers", "num_enc_layers"),
                  ("decoder layers", "num_decoder_layers", "num_dec_layers"), ("d_kv", "d_kv", "d_kv")]
    rows = [(label, ours.get(a), theirs.get(b)) for label, a, b in pairs]
    if model == "RPG":
        rows[-2] = ("embd/attn/resid dropout", (ours["embd_dropout"], ours["attn_dropout"], ours["resid_dropout"]),
                    (theirs["embd_dropout"], theirs["attn_dropout"], theirs["resid_dropout"]))
    if model in ("TIGER", "LETTER"):
        import yaml

        # What the run uses: these settings, else the model's yaml default.
        path = os.path.join(common.ROOT, "properties", "model", f"{model}.yaml")
        with open(path) as handle:
            default = yaml.safe_load(handle)
        layer = {key: ours.get(key, default.get(key)) for key in ("tie_embeddings", "sid_softmax",
                                                                   "decoder_start_init_std")}
        rows.append(("output layer", ", ".join(f"{key} {value}" for key, value in layer.items()),
                     "one head per level (level softmax), untied" if model == "TIGER"
                     else "HF lm_head over all tokens + EOS"))
    if model == "LETTER":
        rows.append(("CE temperature", ours["ce_temperature"], theirs["ranking_temperature"]))
        rows.append(("warm-up", f"{ours['warmup_steps']} steps", "warmup_ratio (same steps)"))
        rows.append(("model selection", "valid NDCG@10", "valid loss (released trainer)"))
    else:
        rows.append(("model selection", "valid NDCG@10, every epoch", "valid NDCG@10, every epoch"))
    rows += [("optimiser", "AdamW, cosine after linear warm-up", "AdamW, cosine after linear warm-up"),
             ("semantic IDs", f"{n_levels} x {codebook_size} (+ collision digit for TIGER)", "ours, exported")]
    return rows


# ---- one row, in its own process ----------------------------------------------------------------------------
def user_sequences(config, dataset, valid_data, test_data):
    """Per user (RecBole internal ids): the chronological items (training items, validation target, test target),
    rebuilt from RecBole's augmented rows (one row per target, sorted by user and time; a user's first item only
    occurs as the history of the row of length 1) and checked against RecBole's validation and test rows."""
    uid, iid = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
    list_field, length_field = iid + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"]
    inter = dataset.inter_feat
    sequences = {}
    for user, target, first, n in zip(inter[uid].tolist(), inter[iid].tolist(), inter[list_field][:, 0].tolist(),
                                      inter[length_field].tolist()):
        if n == 1:
            sequences[user] = [first]
        sequences[user].append(target)
    for split, offset in ((valid_data, 2), (test_data, 1)):
        inter = split._dataset.inter_feat
        hist, length = inter[config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]], inter[config["ITEM_LIST_LENGTH_FIELD"]]
        for user, target, row, n in zip(inter[uid].tolist(), inter[iid].tolist(), hist.tolist(), length.tolist()):
            seq = sequences[user]
            expected = seq[: len(seq) - offset + 1]
            if expected[-1] != target or row[:n] != expected[:-1][-n:]:
                raise RuntimeError(f"The rebuilt sequence of user {user} differs from RecBole's split: the peer "
                                   f"would not see the same data.")
    return sequences


def check_training_rows(sequences, train_data):
    """cornac trains on every prefix of each training session: as many rows as RecBole's augmented training split."""
    from recbole_genrec.quick_start import training_targets

    rows = sum(max(len(seq) - 3, 0) for seq in sequences.values())
    if rows != training_targets(train_data):
        raise RuntimeError(f"cornac would train on {rows} prefixes, RecBole on {training_targets(train_data)}.")


def cornac_evaluation(config, dataset, sequences, features):
    """cornac's NextItemEvaluation over the same split, item index = RecBole id - 1, user index = RecBole id - 1."""
    import numpy as np
    from cornac.data import FeatureModality
    from cornac.eval_methods import NextItemEvaluation

    n_items = dataset.item_num - 1  # without RecBole's padding item 0
    n_users = dataset.user_num - 1

    class AlignedNextItemEvaluation(NextItemEvaluation):
        def _build_datasets(self, train_data, test_data, val_data=None):
            # `build` clears the maps right before this call: fix the indices to RecBole's ids first.
            self.global_uid_map.update((u, u - 1) for u in range(1, n_users + 1))
            self.global_iid_map.update((i, i - 1) for i in range(1, n_items + 1))
            super()._build_datasets(train_data, test_data, val_data)

    def rows(cut):  # (user, session, item, position) tuples; positions keep the order within a session
        return [(u, u, item, t) for u, seq in sequences.items() for t, item in enumerate(seq[: len(seq) - cut])]

    train = rows(2)
    valid = rows(1)
    test = rows(0)
    evaluation = AlignedNextItemEvaluation(fmt="USIT", mode="last", exclude_unknowns=False, seed=config["seed"],
                                           item_feature=FeatureModality(features=features[1:],
                                                                        ids=list(range(1, n_items + 1))))
    evaluation.build(train_data=train, test_data=test, val_data=valid)
    mapped = evaluation.global_iid_map
    if any(mapped[i] != i - 1 for i in range(1, n_items + 1)) or len(mapped) != n_items:
        raise RuntimeError("cornac's item indices are not RecBole's ids - 1.")
    if not np.array_equal(evaluation.train_set.item_feature.features, features[1:]):
        raise RuntimeError("cornac's item features are not aligned with RecBole's item ids.")
    return evaluation


def shuffle_cornac_prefixes():
    """`--cornac_batches=shuffled`: cornac's TIGER trains on batches of all prefixes shuffled together, as RecBole's
    loader (and ours) does, instead of consecutive prefixes of a few shuffled sessions (cornac's
    `session_seq_iter`). The same training triples and count per epoch; only the batches' composition changes."""
    import numpy as np
    from cornac.models.tiger import recom_tiger

    session_iter = recom_tiger.session_seq_iter

    def shuffled(train_set, pad_index, batch_size=64, max_len=20, n_sample=0, rng=None, shuffle=True, **kwargs):
        if n_sample:
            raise ValueError("--cornac_batches=shuffled supports n_sample=0 only (TIGER's full softmax).")
        triples = [batch for batch in session_iter(train_set, pad_index, batch_size=1, max_len=max_len,
                                                     n_sample=0, rng=rng, shuffle=False, **kwargs)]
        # session_seq_iter's batch_size=1 drops a lone last triple ("> 1"): none is lost when every session has
        # more than one prefix, which the check below confirms.
        expected = sum(len(m) - 1 for m in train_set.sessions.values() if len(m) >= 2)
        if len(triples) != expected:
            raise RuntimeError(f"shuffled prefixes: {len(triples)} triples, expected {expected}.")
        order = rng.permutation(len(triples)) if shuffle else np.arange(len(triples))
        for start in range(0, len(order), batch_size):
            chosen = [triples[i] for i in order[start:start + batch_size]]
            yield tuple(np.concatenate([part[j] for part in chosen]) for j in range(3))

    recom_tiger.session_seq_iter = shuffled


def cornac_model(model, options, codes):
    """cornac's model with our semantic IDs in place of its tokenizer (codes: [n_items, levels], cornac order)."""
    import numpy as np
    from cornac.models import LETTER, RPG, TIGER

    if model == "LETTER":
        return LETTER(precomputed_semantic_ids=codes.astype("int64"), **options)
    if model == "RPG":
        class RPGWithOurIds(RPG):
            def _opq_tokenize(self, feats, train_mask=None):
                return codes.astype("int64")

        return RPGWithOurIds(**options)

    class TIGERWithOurIds(TIGER):
        def _tokenize(self, torch, feats_t):
            return codes[:, :-1].astype("int64")  # cornac appends its own collision digit...

        def _build_semantic_ids(self, level_codes):
            super()._build_semantic_ids(level_codes)
            if not np.array_equal(self.sid_table, codes):  # ...which must equal ours
                raise RuntimeError("cornac's collision digit differs from ours: the IDs would not be the same.")

    return TIGERWithOurIds(**options)


def run_cornac(model, dataset_name, settings, seed, data_path, val_sample=None):
    import numpy as np
    import torch

    from recbole_genrec.quick_start import training_targets

    from recbole_genrec.representation import item_text_embeddings

    config, dataset, train_data, valid_data, test_data, data_seconds = common.prepare_split(
        model, dataset_name, plugin_config(model, settings, seed, data_path))
    start = time.time()
    sequences = user_sequences(config, dataset, valid_data, test_data)
    check_training_rows(sequences, train_data)
    features = np.asarray(item_text_embeddings(config, dataset), dtype="float32")
    evaluation = cornac_evaluation(config, dataset, sequences, features)
    codes = dataset.semantic_ids.codes[1:].cpu().numpy()
    data_seconds += time.time() - start
    n_levels = codes.shape[1] - (1 if model == "TIGER" else 0)
    codebook_size = settings["tokenizer_params"]["codebook_size"]
    options = cornac_options(model, settings, seed, n_levels, codebook_size, train_rows=training_targets(train_data),
                             val_sample=val_sample)
    peer = cornac_model(model, options, codes)

    valid_seconds, valid_scores = [0.0], []
    for name in ("_validate", "_validation_loss"):  # time model selection apart from training
        if hasattr(peer, name):
            inner = getattr(peer, name)

            def timed(*args, _inner=inner, _name=name, **kwargs):
                t0 = time.time()
                try:
                    score = _inner(*args, **kwargs)
                    if _name == "_validate":  # validation NDCG@10 (LETTER's is a loss)
                        valid_scores.append(score)
                    return score
                finally:
                    valid_seconds[0] += time.time() - t0

            setattr(peer, name, timed)
    start = time.time()
    peer.fit(evaluation.train_set, evaluation.val_set)
    train_seconds = time.time() - start - valid_seconds[0]
    train_sequences = training_targets(train_data)
    epochs = getattr(peer, "current_epoch", None) or settings["epochs"]

    # Test: RecBole's test rows, each user's history as RecBole holds it, cornac's score() (one user per call).
    k = max(config["topk"])

    def topk_fn(histories):
        lists = []
        for history in histories:
            scores = peer.score(None, [i - 1 for i in history])
            top = np.argsort(-scores, kind="stable")[:k]
            lists.append([int(i) + 1 if scores[i] > -1e9 else -1 for i in top])
        return torch.tensor(lists, dtype=torch.long)

    metrics, cornac_metrics, test_seconds, test_users = score_topk_lists(config, test_data, topk_fn)
    return {**metrics, **cornac_metrics, "valid_ndcg@10": max(valid_scores, default=None),
            "valid_curve": " ".join(f"{v:.4f}" for v in valid_scores), "epochs": epochs,
            "train_sequences": train_sequences,
            "train_seq_per_s": train_sequences * epochs / train_seconds, "test_users": test_users,
            "test_users_per_s": test_users / test_seconds, "data_seconds": data_seconds,
            "train_seconds": train_seconds, "valid_seconds": valid_seconds[0], "test_seconds": test_seconds}


def score_topk_lists(config, test_data, topk_fn):
    """Top-K lists from `topk_fn(histories) -> long [B, k]` (RecBole item ids, -1 = none) over RecBole's test
    loader, scored by the plugin's evaluator path (GenRecCollector + RecBole's Evaluator), and by cornac's own
    Recall / NDCG on the same lists."""
    import numpy as np
    from cornac.metrics import NDCG as CornacNDCG
    from cornac.metrics import Recall as CornacRecall
    from recbole.evaluator import Evaluator

    from recbole_genrec.trainer import GenRecCollector

    collector, evaluator = GenRecCollector(config), Evaluator(config)
    list_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    cornac_scores = {"cornac_recall@10": [], "cornac_ndcg@10": []}
    recall, ndcg = CornacRecall(k=10), CornacNDCG(k=10)
    users, start = 0, time.time()
    for interaction, _, positive_u, positive_i in test_data:
        lengths = interaction[config["ITEM_LIST_LENGTH_FIELD"]].tolist()
        histories = [row[:n] for row, n in zip(interaction[list_field].tolist(), lengths)]  # never the target
        topk = topk_fn(histories)
        collector.eval_topk_collect(topk, positive_u, positive_i, test_data._dataset.item_num)
        for row, target in zip(topk.tolist(), positive_i.tolist()):
            ranked = np.array([i for i in row if i >= 0])
            cornac_scores["cornac_recall@10"].append(recall.compute(gt_pos=np.array([target]), pd_rank=ranked))
            cornac_scores["cornac_ndcg@10"].append(ndcg.compute(gt_pos=np.array([target]), pd_rank=ranked))
        users += len(histories)
    seconds = time.time() - start
    result = evaluator.evaluate(collector.get_data_struct())
    metrics = {key: float(result[key]) for key in ("recall@5", "recall@10", "ndcg@5", "ndcg@10")}
    return metrics, {key: float(np.mean(v)) for key, v in cornac_scores.items()}, seconds, users


def hf_generate_comparison(checkpoint, max_users):
    """Our batched constrained beam search against HF `generate(num_beams, prefix_allowed_tokens_fn=<trie>)`,
    batched too, on the same trained weights (converted by `model/layers/hf_t5.py`) and the first `max_users` test
    users: users/s of each, measured one after the other in this process, and how often the two top-K lists agree."""
    from collections import defaultdict

    import torch

    from recbole_genrec.model.layers.hf_t5 import to_hf_t5
    from recbole_genrec.quick_start import load_data_and_model

    config, model, _, _, _, test_data = load_data_and_model(checkpoint)
    model.eval()
    hf = to_hf_t5(model.backbone).eval()
    tokens = model.vocab.to_tokens(model.item_codes[1:])
    children = defaultdict(set)
    for row in tokens.tolist():
        for level in range(len(row)):
            children[tuple(row[:level])].add(row[level])
    children = {prefix: sorted(next_tokens) for prefix, next_tokens in children.items()}
    k, beam, levels = max(config["topk"]), model.beam_size, model.vocab.num_levels
    ours_seconds = hf_seconds = 0.0
    users = same = 0
    for interaction, _, _, _ in test_data:
        if users >= max_users:
            break
        interaction = interaction[: max_users - users]
        with torch.no_grad():
            start = time.time()
            our_items, _ = model.generate_topk(interaction, k)
            ours_seconds += time.time() - start
            input_ids, mask = model.encoder_inputs(interaction)
            start = time.time()
            output = hf.generate(input_ids, attention_mask=mask, num_beams=beam, num_return_sequences=k,
                                 max_new_tokens=levels, length_penalty=0.0, early_stopping=False, do_sample=False,
                                 prefix_allowed_tokens_fn=lambda _, seq: children[tuple(seq[1:].tolist())])
            hf_seconds += time.time() - start
        sequences = output.view(len(input_ids), k, -1)[:, :, 1:]
        hf_items = model.catalogue.lookup_items(model.vocab.to_codes(sequences))
        same += int((hf_items == our_items).all(dim=1).sum())
        users += len(input_ids)
    return {"hf_users": users, "ours_users_per_s_same_users": users / ours_seconds,
            "hf_generate_users_per_s": users / hf_seconds, "hf_same_topk_lists": same / users}


def run_ours(model, dataset_name, settings, seed, data_path, hf_users=0):
    from recbole_genrec.quick_start import run_recbole_genrec

    start = time.time()
    result = run_recbole_genrec(model=model, dataset=dataset_name,
                                config_dict=plugin_config(model, settings, seed, data_path), saved=True)
    wall = time.time() - start
    if result.get("paused"):  # train_time_budget paused a row with a resume_file: no test yet
        return {"paused": True, "epochs": result["epochs"], "train_seconds": result["train_seconds"]}
    test = result["test_result"]
    train_seconds = result["train_seconds"]
    epochs = result["epochs"]
    valid_seconds = None  # RecBole's validation runs inside fit; wall - train - test bounds it
    return {**{key: float(test[key]) for key in ("recall@5", "recall@10", "ndcg@5", "ndcg@10")},
            "valid_ndcg@10": float(result["best_valid_score"]), "epochs": epochs,
            "train_sequences": result["train_sequences"],
            "train_seq_per_s": result["train_sequences"] * epochs / train_seconds,
            "test_users": result["test_users"], "test_users_per_s": result["test_users"] / result["test_eval_seconds"],
            "data_seconds": (result["text_seconds"] or 0.0) + (result["tokenizer_seconds"] or 0.0),
            "train_seconds": train_seconds, "valid_seconds": valid_seconds,
            "test_seconds": result["test_eval_seconds"], "wall_seconds": wall,
            **(hf_generate_comparison(result["checkpoint"], hf_users) if hf_users and model != "RPG" else {})}


def worker(spec):
    """One row: {model, implementation, seed, settings, data_path} -> the row's JSON on stdout's last line."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    start = time.time()
    args = (spec["model"], spec["dataset"], spec["settings"], spec["seed"], spec.get("data_path"))
    if spec["implementation"] == "recbole_genrec":
        row = run_ours(*args, hf_users=spec.get("hf_users", 0))
    else:
        if spec.get("cornac_batches", "sessions") == "shuffled":
            shuffle_cornac_prefixes()
        row = run_cornac(*args, val_sample=spec.get("cornac_val_sample"))
    row.setdefault("wall_seconds", time.time() - start)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    row["threads"] = torch.get_num_threads()
    print("PEERS_ROW " + json.dumps(row))


# ---- the driver ---------------------------------------------------------------------------------------------
def parse_args(argv):
    from recbole_genrec.safety import parse_value

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--models", default="TIGER,LETTER,RPG")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 2020, 2021, ... for each implementation")
    parser.add_argument("--first_seed", type=int, default=2020)
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--out", default="results/peers")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one epoch: the smoke test (<= 3 min)")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every row's process")
    parser.add_argument("--hf_users", type=int, default=0,
                        help="also decode this many test users with HF generate on our trained weights (TIGER, LETTER)")
    parser.add_argument("--cornac_val_sample", type=int, default=None,
                        help="validate cornac on this many users (its own subsample option; default all, as ours)")
    parser.add_argument("--cornac_batches", default="sessions", choices=("sessions", "shuffled"),
                        help="cornac's TIGER batches: consecutive prefixes of shuffled sessions (cornac's own) or "
                             "all prefixes shuffled together (RecBole's); an experiment on what separates the two")
    parser.add_argument("--summarize", default=None,
                        help="comma-separated peers.csv files: print their mean ± std table and exit")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    for item in rest:  # --key=value: a setting for every model (e.g. --epochs=20)
        if not item.startswith("--") or "=" not in item:
            raise SystemExit(f"peers.py: unrecognised argument {item!r} (settings are --key=value).")
        key, value = item[2:].split("=", 1)
        overrides[key] = parse_value(value)
    return args, overrides


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, overrides = parse_args(argv)
    if args.summarize:
        print(summary(read_rows(args.summarize.split(","))))
        return None
    if args.worker:
        with open(args.worker) as handle:
            return worker(json.load(handle))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.hf_users and "TIGER" in models and not (overrides.get("tie_embeddings") is True
                                                   and overrides.get("sid_softmax") == "vocabulary"):
        # HF's T5 has one tied vocabulary softmax; TIGER's default (cornac's per-level heads) has no HF counterpart.
        raise SystemExit("peers.py --hf_users compares decoding with HF's T5, which ties one vocabulary softmax: add "
                         "--tie_embeddings=True --sid_softmax=vocabulary for TIGER (its default is per-level heads).")
    unknown = [m for m in models if m not in SETTINGS]
    if unknown:
        raise SystemExit(f"peers.py: no peer for {unknown}; cornac ships {sorted(SETTINGS)}.")
    implementations = [i.strip() for i in args.implementations.split(",") if i.strip()]
    if set(implementations) - set(IMPLEMENTATIONS):
        raise SystemExit(f"peers.py: --implementations takes {IMPLEMENTATIONS}.")
    if "cornac" in implementations:
        try:
            import cornac  # noqa: F401
        except ImportError:
            raise SystemExit('peers.py needs cornac: pip install -e ".[peers]"') from None
    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, "peers.csv")
    from recbole_genrec.measure import hardware

    command = "python benchmarks/peers.py " + " ".join(argv)
    rows = []
    for model in models:
        settings = settings_for(model, args.quick, overrides)
        tok = settings["tokenizer_params"]
        levels = tok.get("num_levels", tok.get("num_digits"))
        print(f"\n{model}: settings side by side (ours | cornac 3.0.1)")
        for label, ours, theirs in side_by_side(model, settings, levels, tok["codebook_size"]):
            print(f"  {label:<24} {str(ours):<40} {theirs}")
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for implementation in implementations:
                spec = {"model": model, "implementation": implementation, "seed": seed, "settings": settings,
                        "dataset": args.dataset, "data_path": args.data_path, "threads": args.threads,
                        "hf_users": args.hf_users, "cornac_val_sample": args.cornac_val_sample,
                        "cornac_batches": args.cornac_batches}
                row = run_row(spec, args.out)
                row.update({"model": model, "implementation": implementation, "seed": seed, "dataset": args.dataset,
                            "hardware": hardware(), "date": datetime.date.today().isoformat(), "command": command})
                rows.append(row)
                append_csv(csv_path, row)
                print(f"  {model} {implementation} seed {seed}: R@10 {row['recall@10']:.4f} "
                      f"N@10 {row['ndcg@10']:.4f} | train {row['train_seq_per_s']:.0f} seq/s | "
                      f"test {row['test_users_per_s']:.1f} users/s | {row['wall_seconds']:.0f} s", flush=True)
    print("\n" + summary(rows))
    print(f"\nRows written to {csv_path}")
    return rows


def run_row(spec, out):
    """The row in a fresh process (its own peak RSS); the log goes to <out>/logs/."""
    os.makedirs(os.path.join(out, "logs"), exist_ok=True)
    name = f"{spec['model']}-{spec['implementation']}-{spec['seed']}"
    spec_path = os.path.join(out, "logs", name + ".json")
    with open(spec_path, "w") as handle:
        json.dump(spec, handle)
    log_path = os.path.join(out, "logs", name + ".log")
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--worker={spec_path}"], cwd=os.getcwd(),
                              stdout=subprocess.PIPE, stderr=log, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PEERS_ROW ")]
    if proc.returncode or not lines:
        tail = open(log_path).read()[-3000:]
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    return json.loads(lines[-1][len("PEERS_ROW "):])


def append_csv(path, row):
    new = not os.path.exists(path)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({key: row.get(key) for key in COLUMNS})


def read_rows(paths):
    """Rows of peers.csv files (numbers as floats), e.g. seeds run by several commands."""
    rows = []
    for path in paths:
        with open(path) as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    try:
                        row[key] = float(value) if value not in ("", None) else None
                    except ValueError:
                        pass
                rows.append(row)
    return rows


def summary(rows):
    """Mean and sample standard deviation over seeds, per model and implementation, as a markdown table."""
    import statistics

    def stat(values):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        mean = statistics.mean(values)
        return f"{mean:.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{mean:.4f}"

    lines = ["| model | implementation | seeds | R@5 | R@10 | N@5 | N@10 | train seq/s | test users/s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["implementation"]), []).append(row)
    for (model, implementation), group in groups.items():
        cells = [stat([r[m] for r in group]) for m in ("recall@5", "recall@10", "ndcg@5", "ndcg@10")]
        speed = [f"{statistics.mean(r[m] for r in group):.1f}" for m in ("train_seq_per_s", "test_users_per_s",
                                                                        "peak_rss_mb")]
        seeds = len({r["seed"] for r in group})
        lines.append(f"| {model} | {implementation} | {seeds} | " + " | ".join(cells + speed) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
