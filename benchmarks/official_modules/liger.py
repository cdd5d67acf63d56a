r"""LIGER's official model module (facebookresearch/liger) inside this plugin's pipeline.

The official repository's network, initialisation, loss terms and decoding functions are imported from a checkout
given by path (nothing of it is copied here) and trained / evaluated by OUR pipeline: RecBole's split and loaders,
the plugin's trainer, our semantic IDs and item text vectors, RecBole's metrics. What runs from the checkout:

- network and initialisation: `src/tiger.py` `TIGER` (HF `T5ForConditionalGeneration` with the text `MLP`
  `emb_proj`, `pos_embedding`, `semantic_pos`, `input_embed_layernorm`, `input_embed_dropout`), built exactly as
  `src/training.py` builds it (its T5Config; `initializer_factor`, widths and dropout from our config), so the
  initialisation is whatever the pinned transformers 4.39.3 gives that class: T5's stds x factor in the stacks
  (norm weights = factor), the tied `shared` table at nn.Embedding's N(0, 1), the text head and position tables
  at PyTorch's defaults (`use_new_init: False` in the official method config, so `TIGER._init_weights` is only
  reached through HF's model-level pass, which skips the already-initialised stacks);
- input embedding: `src/evaluation.py` `model_forward` (token embedding + per-token text MLP + item position +
  digit position, LayerNorm, dropout; HF's next-SID cross-entropy when labels are given);
- dense head: `src/evaluation.py` `get_target_embed` (cosine / 0.07 against every item's projected text);
- decoding: `src/evaluation.py` `evaluate` (HF `generate`, unconstrained beam of `beam_size` = 100, all sequences
  returned, the encoder output at the last history token kept) and `generate_then_dense` (the first
  `liger_candidates` = 20 sequences + every cold-start SID, re-ranked by the dense score, top k), called verbatim:
  only their metric function is replaced for the call by one that records the ranked SIDs (and still runs the
  official function on placeholder labels, so its uniqueness check of the beam holds).

Glue written here: our history -> the official batch layout (`load_data.py`: SID tokens
`code + codebook_size * depth + 1`, one trailing pad slot, per-item text vectors zero-padded to the history
length), the loss composition of `src/training.py` `train_epoch` (the loop itself cannot be called per batch):
`outputs.loss * sid_loss_weight + CE(dense logits with the cold items' logits set to -100) *
embedding_loss_weight`, the dense-only ranking of `evaluate_dense_sids` without its label-fed forward (the decoder
gets only the start token), and the ranked SIDs -> our item ids. Method settings (loss weights, temperature, MLP
dropouts, projection type) are read from the checkout's `configs/method/base.yaml` + `setting.yaml` as Hydra
merges them; only `text_embedding_dim` (our text encoder's width) and `hidden_sizes` (our `text_mlp_hidden`, the
official order reversed as `src/tiger.py` reverses it) come from our config.
"""
import contextlib
import os
import sys

OFFICIAL_REPO = "facebookresearch/liger"
OFFICIAL_COMMIT = "b6ccc37af5ee623ddc1d1ead3490c31aaeaf4524"
PARTS = (
    "Official (imported from the checkout): the network and its initialisation (src/tiger.py TIGER: HF "
    "T5ForConditionalGeneration under transformers 4.39.3 with the residual text MLP emb_proj, item and digit "
    "position tables, input LayerNorm and dropout; the tied token table at N(0, 1), the T5 stacks at T5's stds x "
    "initializer_factor), the input embedding and next-SID cross-entropy (src/evaluation.py model_forward, HF's "
    "T5 loss), the dense head (get_target_embed: cosine / 0.07 against every item's projected text), and the "
    "decoding (evaluate: HF generate, unconstrained beam 100 returning 100 sequences; generate_then_dense: the "
    "first 20 sequences + all cold-start SIDs re-ranked by the dense score), called verbatim with their metric "
    "function swapped for a recorder. Method settings come from the checkout's configs/method/{base,setting}.yaml. "
    "Glue written here: our history -> the official batch layout (load_data.py token offsets, trailing pad slot, "
    "zero-padded text vectors), the loss composition of src/training.py train_epoch (SID CE + dense CE with the "
    "cold items' logits at -100, weights 1 + 1), dense-only ranking for model selection as evaluate_dense_sids "
    "but without feeding the labels to the decoder, and ranked SIDs -> item ids (invalid SIDs keep their slot as "
    "no item, repeats of an item are dropped). Ours: split, loaders, semantic IDs, item text vectors, trainer "
    "(optimiser, schedule, clipping, checkpoint selection) and RecBole's metrics."
)
SETTINGS = {}

# Users per official decoding call: HF's beam search copies the encoder output once per beam (100 x), and
# generate_then_dense compares [users, candidates, items, levels]; chunks keep both small. Results do not depend on
# it (every user is decoded independently).
DECODE_CHUNK = 128


def _merge(base, override):
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def official_method_config(checkout):
    """configs/method/setting.yaml over its default `base` (Hydra: `_self_` last, so setting.yaml wins), as run.py
    builds `method_config` for `method=setting test_method=liger` (scripts/ours.sh)."""
    import yaml

    folder = os.path.join(checkout, "configs", "method")
    with open(os.path.join(folder, "base.yaml")) as handle:
        base = yaml.safe_load(handle)
    with open(os.path.join(folder, "setting.yaml")) as handle:
        setting = yaml.safe_load(handle)
    defaults = setting.pop("defaults", [])
    if defaults != ["base"]:
        raise ValueError(f"configs/method/setting.yaml: defaults {defaults!r}, expected ['base']")
    return _merge(base, setting)


def _import_official(checkout):
    checkout = os.path.abspath(checkout)
    if not os.path.isfile(os.path.join(checkout, "src", "tiger.py")):
        raise FileNotFoundError(f"{checkout} is not a checkout of {OFFICIAL_REPO} (no src/tiger.py)")
    loaded = sys.modules.get("src")
    if loaded is not None and not any(os.path.abspath(p).startswith(checkout) for p in getattr(loaded, "__path__", [])):
        raise ImportError(f"another package named 'src' is already imported ({loaded}); run in a fresh process")
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    import src.evaluation as evaluation
    import src.tiger as tiger

    for module in (evaluation, tiger):
        if not os.path.abspath(module.__file__).startswith(checkout):
            raise ImportError(f"{module.__name__} imported from {module.__file__}, not from {checkout}")
    return tiger, evaluation


@contextlib.contextmanager
def _recording(evaluation):
    """While active, the official `calculate_metrics` also records the ranked SIDs it is given ([B, K, L] per call)
    and `tqdm` is silent. The official function still runs (on placeholder labels), so its checks hold."""
    original_metrics, original_tqdm = evaluation.calculate_metrics, evaluation.tqdm
    ranked = []

    def record(outputs, labels, KEYS, codebook_level=4, lift_constraint=False):  # noqa: N803 (official names)
        ranked.append(outputs)
        return original_metrics(outputs, labels, KEYS=KEYS, codebook_level=codebook_level,
                                lift_constraint=lift_constraint)

    evaluation.calculate_metrics = record
    evaluation.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield ranked
    finally:
        evaluation.calculate_metrics, evaluation.tqdm = original_metrics, original_tqdm


def swapped_class(checkout):
    """Our LIGER (semantic IDs, catalogue, cold-start items, text vectors, trainer hooks) with the official module
    as network, loss and decoding."""
    import torch
    import torch.nn.functional as F
    from transformers import T5Config

    from recbole_genrec.model import liger as liger_module
    from recbole_genrec.model.liger import LIGER

    tiger, evaluation = _import_official(checkout)
    base_method_config = official_method_config(checkout)

    class OfficialModuleLIGER(LIGER):
        official_checkout = os.path.abspath(checkout)

        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            # Ours is replaced: the backbone, the text MLP, the position tables, the input norm and dropout.
            for name in ("backbone", "text_projection", "item_position", "digit_position", "input_norm",
                         "input_dropout"):
                delattr(self, name)
            levels = self.n_levels
            sizes = [int(size) for size in self.vocab_sizes]
            # Official token layout (src/load_data.py expand_id): token = code + codebook_size * depth + 1, every
            # level `codebook_size` wide except the last (the collision digit), max(its codes, codebook_size) wide;
            # 0 = padding and decoder start, the last token = EOS (src/training.py this_vocab_size).
            codebook_size = max(sizes[:-1]) if levels > 1 else sizes[0]
            last_size = max(sizes[-1], codebook_size)
            self.official_offsets = [codebook_size * depth + 1 for depth in range(levels)]
            self.official_level_sizes = sizes
            vocab_size = codebook_size * (levels - 1) + last_size + 2
            item_sids = self.item_codes + torch.tensor(self.official_offsets)
            item_sids[0] = 0  # the padding item: padding tokens
            self.register_buffer("official_item_sids", item_sids, persistent=False)
            cold_sids = item_sids[self.cold_items] if len(self.cold_items) else item_sids[:0]
            # train_tiger: np.unique(concat(val_unseen, test_unseen), axis=0), i.e. sorted rows
            self.register_buffer("official_cold_sids", torch.unique(cold_sids, dim=0), persistent=False)

            method_config = json_copy(base_method_config)
            head = method_config["embedding_head_dict"]
            head["text_embedding_dim"] = int(self.item_text.shape[1])
            hidden = [int(width) for width in (config["text_mlp_hidden"] or [])]
            if not hidden:
                raise ValueError("the official text MLP needs at least one hidden width (text_mlp_hidden)")
            head["hidden_sizes"] = hidden[::-1]  # src/tiger.py builds MLP(..., hidden_sizes[::-1], ...)
            if not (method_config["flag_add_input_embedding"] and method_config["flag_use_output_embedding"]
                    and method_config["use_id"] == "sid" and not method_config["include_user_id"]):
                raise ValueError(f"unexpected official method config {method_config!r}")
            self.method_config = method_config
            n_positions = self.max_seq_length * levels + 1
            # src/training.py train_tiger: the T5Config, widths from our config
            t5_config = T5Config(
                num_layers=int(config["num_encoder_layers"]), num_decoder_layers=int(config["num_decoder_layers"]),
                d_model=int(config["d_model"]), d_ff=int(config["d_ff"]), num_heads=int(config["num_heads"]),
                d_kv=int(config["d_kv"]), dropout_rate=float(config["dropout"]), vocab_size=vocab_size,
                pad_token_id=0, eos_token_id=int(vocab_size - 1), decoder_start_token_id=0,
                feed_forward_proj="relu", n_positions=n_positions, layer_norm_epsilon=1e-8,
                initializer_factor=float(config["init_factor"]),
            )
            self.official = tiger.TIGER(
                config=t5_config, n_semantic_codebook=levels - 1, max_items_per_seq=self.max_seq_length,
                flag_use_output_embedding=method_config["flag_use_output_embedding"],
                flag_use_learnable_text_embed=method_config["flag_add_input_embedding"],
                embedding_head_dict=method_config["embedding_head_dict"],
            )
            self.decode_chunk = DECODE_CHUNK

        # ---- our interaction -> the official batch ---------------------------------------------------------------
        def official_batch(self, items, labels=None):
            """src/load_data.py generate_input_sequence's layout for our history: `input_sids` [B, T*L + 1] (the
            history's SID tokens, then padding: the official rows always end in at least one pad slot),
            `attention_mask_sids`, `input_embeddings` [B, T, d_text] (each history item's text vector, zero rows
            for padding) and `labels_sids` [B, L]: the target's tokens in training, zeros (placeholders, used for
            shapes only) when decoding. `items`: the history [B, T] (self.history), right-padded with 0."""
            tokens = self.official_item_sids[items].flatten(1)
            tokens = torch.cat([tokens, tokens.new_zeros(len(tokens), 1)], dim=1)
            if labels is None:
                labels = tokens.new_zeros(len(tokens), self.n_levels)
            return {"input_sids": tokens, "attention_mask_sids": (tokens != 0).long(),
                    "input_embeddings": self.item_text[items], "labels_sids": labels}

        def official_item_embedding(self):
            """Every item's text vector, official row i = item i + 1 (our row 0 is the padding item)."""
            return self.item_text[1:]

        # ---- training: src/training.py train_epoch's loss ----------------------------------------------------------
        def calculate_loss(self, interaction):
            target = interaction[self.POS_ITEM_ID]
            batch = self.official_batch(self.history(interaction)[0], labels=self.official_item_sids[target])
            outputs, _ = evaluation.model_forward(self.official, batch, target.device, self.n_levels,
                                                  self.method_config)
            config = self.method_config
            loss = outputs.loss * config["sid_loss_weight"]
            _, logits = evaluation.get_target_embed(self.official.predicted_embedding, self.official, config,
                                                    self.official_item_embedding())
            if len(self.cold_items):
                logits[:, self.cold_items - 1] = -100  # "do not update the embedding for the unseen items"
            loss = loss + F.cross_entropy(logits, target - 1) * config["embedding_loss_weight"]
            return loss

        # ---- ranking -----------------------------------------------------------------------------------------------
        def ranked_topk(self, interaction, k, inference):
            """(items [B, k], scores [B, k]) by `inference`: dense (model selection, as the official
            `evaluation_method: dense`), hybrid (generate_then_dense) or generative (the beam alone)."""
            items, _ = self.history(interaction)
            with torch.no_grad():
                if inference == "dense":
                    return self.official_dense_topk(items, k)
                ranked = [self.official_decode(self.official_batch(items[start:start + self.decode_chunk]), k,
                                               inference) for start in range(0, len(items), self.decode_chunk)]
                return self.sids_to_items(torch.cat(ranked), k)

        def official_dense_topk(self, items, k):
            """evaluate_dense_sids' ranking: TIGER.forward's encoder output at the last history token against every
            item's projected text (get_target_embed), top k. The official call feeds the target SIDs as labels to
            the decoder (not used by the dense score); here the decoder gets the start token only."""
            batch = self.official_batch(items)
            device = batch["input_sids"].device
            _, inputs = evaluation.model_forward(self.official, batch, device, self.n_levels, self.method_config,
                                                 skip_forward=True)
            start = torch.zeros(len(batch["input_sids"]), 1, dtype=torch.long, device=device)
            self.official(**inputs, decoder_input_ids=start)
            _, logits = evaluation.get_target_embed(self.official.predicted_embedding, self.official,
                                                    self.method_config, self.official_item_embedding())
            scores, index = logits.float().topk(min(k, logits.shape[1]), dim=1)
            return index + 1, scores

        def official_decode(self, batch, k, inference):
            """The official decoding of one chunk -> ranked official SIDs [B, k', L]."""
            item2sid = self.official_item_sids[1:].cpu().numpy()
            device = batch["input_sids"].device
            with _recording(evaluation) as ranked:
                _, _, candidates, embeddings = evaluation.evaluate(
                    self.official, [batch], self.official_item_sids[1:], device, method_config=self.method_config,
                    KEYS=[k], RETRIEVE_KEY=[int(self.beam_size)])
                if inference == "generative":
                    return torch.stack(candidates)[:, :k]
                if inference != "hybrid":
                    raise ValueError(f"liger_inference {inference!r}")
                ranked.clear()
                evaluation.generate_then_dense(
                    self.official, [batch], self.official_cold_sids, device, method_config=self.method_config,
                    returned_cand=candidates, returned_embd=embeddings, item2sid=item2sid,
                    item_embedding=self.official_item_embedding(), KEYS=[k], RETRIEVE_KEY=[self.candidates])
            (candidate_sid,) = ranked
            return candidate_sid

        def sids_to_items(self, sids, k):
            """Official SIDs [B, K, L] -> (items [B, k], rank scores): -1 for a SID that names no item (the
            official list keeps such a slot, it never matches a target) and for a repeat of an item already
            ranked (generate_then_dense appends every cold SID to the beam's, so an item can appear twice)."""
            sids = sids.long()
            offsets = torch.tensor(self.official_offsets, device=sids.device)
            sizes = torch.tensor(self.official_level_sizes, device=sids.device)
            codes = sids - offsets
            in_range = ((codes >= 0) & (codes < sizes)).all(-1)
            items = self.catalogue.lookup_items(codes.clamp(min=0))
            items = torch.where(in_range, items, torch.full_like(items, -1))
            if items.shape[1] > 1:
                same = items[:, :, None] == items[:, None, :]
                earlier = torch.tril(torch.ones_like(same[0]), diagonal=-1)
                repeat = (same & earlier).any(-1) & (items >= 0)
                items = items.masked_fill(repeat, -1)
            if items.shape[1] < k:
                items = torch.cat([items, items.new_full((len(items), k - items.shape[1]), -1)], dim=1)
            items = items[:, :k]
            scores = -torch.arange(k, dtype=torch.float32, device=items.device).expand(len(items), k).clone()
            return items, scores.masked_fill(items < 0, float("-inf"))

    # Checkpoints pickle the model class by reference and load through the plugin's allow-list of model modules:
    # the class lives in recbole_genrec.model.liger for this process (as benchmarks/peer_module_swap.py does).
    OfficialModuleLIGER.__module__ = liger_module.__name__
    OfficialModuleLIGER.__qualname__ = OfficialModuleLIGER.__name__
    liger_module.OfficialModuleLIGER = OfficialModuleLIGER
    return OfficialModuleLIGER


def json_copy(value):
    import json

    return json.loads(json.dumps(value))

