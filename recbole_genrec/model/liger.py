"""LIGER — Unifying Generative and Dense Retrieval for Sequential Recommendation (Yang et al., 2024).

Follows the official code (facebookresearch/liger: src/tiger.py, src/training.py, src/evaluation.py,
configs/method/setting.yaml, configs/dataset/amazon.yaml); every choice below is a setting of LIGER.yaml.

Representation and tokenization: TIGER's (item text -> RQ-VAE 3 x 256 + collision digit), the RQ-VAE fitted on the
training split's items. Backbone: TIGER's encoder-decoder with 6 + 6 layers, every stack weight's initialisation
scaled by T5's `initializer_factor` (`init_factor`, 0.02), the token table at N(0, 1) as the official model under
its transformers. Input of every history token: its semantic-ID token embedding + the item's standardised text
vector through a residual MLP (`text_mlp_hidden`: blocks of Linear, LayerNorm, ReLU, dropout plus a bias-free linear
skip, then an output projection) + an item-position and a digit-position embedding, the sum through LayerNorm and
dropout (`input_dropout`, 0.5). Training: next-SID cross-entropy + a dense loss: the encoder output at the last
history token, compared by cosine / temperature (0.07) with the projected text of every item, cross-entropy over
items with the cold-start items masked out (`dense_mask_cold`).

Inference (`liger_inference`):
  hybrid      LIGER: the first `liger_candidates` items of a beam of `beam_size` (20 of 100, unconstrained as
              the official code unless `constrained_beam`; codes naming no item are dropped, never mapped to an
              item), united with every cold-start item (never in the training split), re-ranked by the dense
              score (inference/rerank.py), computed for those items alone from the catalogue's projected text,
              which evaluation computes once and caches (`item_vectors`).
  dense       dense retrieval alone: every item ranked by the dense score.
  generative  the beam search alone (TIGER's inference).
Cold-start items come from the training split only (`train_item_mask`, set by data.mark_training_items); the text
embeddings of all items are content, known for every item, and indexed by the history or scored as a catalogue,
never looked up through the target. Defaults: properties/model/LIGER.yaml.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recbole_genrec.inference import rerank_scored_candidates
from recbole_genrec.model.layers import Dropout, RMSNorm, cosine_logits, unit_rows
from recbole_genrec.model.seq2seq import SemanticIdSeq2Seq
from recbole_genrec.representation import item_text_embeddings


class ResidualMLP(nn.Module):
    """The official text projection (src/tiger.py `MLP`): input dropout, then per hidden width a block
    Linear -> LayerNorm -> ReLU -> Dropout plus a bias-free linear skip of the block's input (the official 1-channel
    Conv1d with kernel = stride = input width is that linear map), then a linear output projection. PyTorch's default
    initialisation, as the official module (built after T5's weight initialisation, so never rescaled by it)."""

    def __init__(self, input_dim, hidden_dims, output_dim, dropout, eps):
        super().__init__()
        dims = [int(input_dim), *(int(dim) for dim in hidden_dims)]
        self.input_dropout = Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.LayerNorm(b, eps=eps), nn.ReLU(), Dropout(dropout))
            for a, b in zip(dims[:-1], dims[1:]))
        self.skips = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:]))
        self.output = nn.Linear(dims[-1], output_dim)

    def forward(self, x):
        x = self.input_dropout(x)
        for block, skip in zip(self.blocks, self.skips):
            x = block(x) + skip(x)
        return self.output(x)


def standardized_text(vectors):
    """Item text vectors [N + 1, d] z-scored per dimension over the catalogue's items (rows 1..N, population std, as
    the official sklearn StandardScaler over all items; content only, no interactions); the padding row stays 0."""
    items = np.asarray(vectors[1:], dtype=np.float64)
    mean, std = items.mean(0), items.std(0)
    std[std < 1e-8] = 1.0  # a constant dimension maps to 0, not NaN
    out = ((vectors - mean) / std).astype(np.float32)
    out[0] = 0.0
    return out


def _autocast_state(device_type):
    """(enabled, dtype) of autocast on `device_type`: a projection computed under autocast is another tensor."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    if device_type == "cpu":
        return torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()


class LIGER(SemanticIdSeq2Seq):
    @staticmethod
    def beam_width_key(config):
        return None if config["liger_inference"] == "dense" else "beam_size"

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        train_items = getattr(dataset, "train_item_mask", None)
        if train_items is None:
            raise ValueError("LIGER needs the training split's items (dataset.train_item_mask) to know the cold-start "
                             "items: build the data with recbole_genrec.quick_start (it calls "
                             "data.mark_training_items after data_preparation).")
        cold = torch.from_numpy(~train_items)
        cold[0] = False
        self.register_buffer("cold_items", torch.nonzero(cold).flatten(), persistent=False)
        # T5's `initializer_factor` (official src/training.py T5Config) as the official model gets it under its pinned
        # transformers 4.39.3: each T5 stack initialises its own weights when built, with factor x T5's std (layer
        # norms with weight = factor), and marks the shared token table initialised without touching it, so the
        # model-level pass (LIGER's `_init_weights` override) skips it: the token table, tied to the output, keeps
        # nn.Embedding's N(0, 1); an untied output head gets the override's N(0, factor). EncoderDecoder initialises
        # at factor 1 with T5's stds and unit norm weights, so scaling every other weight by the factor gives that.
        eps, factor = float(config["layer_norm_eps"]), float(config["init_factor"])
        embedding, head = self.backbone.embedding.weight, self.backbone.lm_head
        with torch.no_grad():
            for parameter in self.backbone.parameters():
                if parameter is not embedding:
                    parameter.mul_(factor)
            if head is not None:
                head.weight.normal_(std=factor)
        for module in self.backbone.modules():
            if isinstance(module, RMSNorm):
                module.eps = eps  # the official T5Config's layer_norm_epsilon
        # Item content (a derived artefact, reloaded from the cache, not stored in checkpoints).
        text = item_text_embeddings(config, dataset)
        if config["text_standardize"]:
            text = standardized_text(text)
        text = torch.from_numpy(np.ascontiguousarray(text)).float()
        self.register_buffer("item_text", text, persistent=False)
        d_model = int(config["d_model"])
        self.text_projection = ResidualMLP(text.shape[1], config["text_mlp_hidden"] or [], d_model,
                                           float(config["text_mlp_dropout"]), eps)
        # PyTorch's default N(0, 1), as the official pos_embedding / semantic_pos (created after T5's initialisation)
        self.item_position = nn.Embedding(self.max_seq_length, d_model)
        self.digit_position = nn.Embedding(self.n_levels, d_model)
        self.input_norm = nn.LayerNorm(d_model, eps=eps) if config["input_layernorm"] else nn.Identity()
        self.input_dropout = Dropout(float(config["input_dropout"]))
        self.dense_temperature = float(config["dense_temperature"])
        self.dense_loss_weight = float(config["dense_loss_weight"])
        self.dense_mask_cold = bool(config["dense_mask_cold"])
        self.candidates = min(int(config["liger_candidates"]), int(self.beam_size))
        self.inference = config["liger_inference"]
        self.valid_inference = config["liger_valid_inference"] or self.inference
        self._catalogue = None  # evaluation's (weights' key, projected text, its unit rows), see `item_vectors`

    def train(self, mode=True):
        self._catalogue = None  # every train() / eval() starts a new cached projection of the catalogue
        return super().train(mode)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        self._catalogue = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def input_embeddings(self, interaction, vectors=None):
        """(encoder tokens [B, S], mask [B, S], input embeddings [B, S, d]): every history token's embedding + its
        item's projected text (a row of `vectors`, default `item_vectors()`) + item and digit position embeddings,
        through LayerNorm and dropout (official src/evaluation.py model_forward)."""
        input_ids, mask = self.encoder_inputs(interaction)
        items, _ = self.history(interaction)
        vectors = self.item_vectors() if vectors is None else vectors
        text = vectors[items].unsqueeze(2)  # [B, T, 1, d]: one vector for all digits of an item
        extra = text + self.item_position.weight[: items.shape[1], None] + self.digit_position.weight  # [B, T, L, d]
        extra = (extra * (items != 0)[:, :, None, None]).flatten(1, 2)
        if self.user_buckets:
            extra = torch.cat([extra.new_zeros(len(extra), 1, extra.shape[-1]), extra], dim=1)
        hidden = self.backbone.embedding(input_ids) + extra.to(self.backbone.embedding.weight.dtype)
        return input_ids, mask, self.input_dropout(self.input_norm(hidden))

    def encode(self, interaction, vectors=None):
        input_ids, mask, hidden = self.input_embeddings(interaction, vectors)
        return input_ids, mask, self.backbone.encode_embeddings(hidden, mask)

    def item_vectors(self):
        """The projected text of every item [N + 1, d]: the history tokens' text input and, L2-normalised, the keys
        of the dense score. The official code runs the text MLP over the whole catalogue for the dense loss and
        again over a copy of each history token's item; here one pass per training step serves both (a history
        item's tokens and its dense key share that step's dropout masks: the same values without dropout, a
        deviation in training, README). In training, or wherever gradients are recorded, computed afresh on every
        call (`calculate_loss` calls it once and hands it on). In evaluation (eval mode, no gradients) computed once
        and cached: every evaluation batch would otherwise run the catalogue through the text MLP. The cache is
        dropped by every train() / eval() call and by load_state_dict, and is recomputed when a weight of the
        projection (or the text buffer) has been changed in place, moved or replaced since."""
        if self.training or torch.is_grad_enabled():
            return self.text_projection(self.item_text)
        key = (tuple((p.data_ptr(), p._version) for p in self.text_projection.parameters()),
               self.item_text.data_ptr(), self.item_text._version, _autocast_state(self.item_text.device.type))
        if self._catalogue is None or self._catalogue[0] != key:
            vectors = self.text_projection(self.item_text)
            self._catalogue = (key, vectors, unit_rows(vectors))
        return self._catalogue[1]

    def catalogue_keys(self, vectors=None):
        """The dense score's keys: `vectors` (default `item_vectors()`) L2-normalised, float32 [N + 1, d]; the
        evaluation cache's own copy when `vectors` is the cached projection."""
        if vectors is None:
            vectors = self.item_vectors()
        if self._catalogue is not None and vectors is self._catalogue[1]:
            return self._catalogue[2]
        return unit_rows(vectors)

    def dense_user(self, interaction, memory):
        """The user's dense query [B, d]: the encoder output at the last history token."""
        _, lengths = self.history(interaction)
        last = lengths * self.n_levels - 1 + (1 if self.user_buckets else 0)
        return memory[torch.arange(len(memory), device=memory.device), last]

    def dense_logits(self, interaction, memory, vectors=None):
        """cos(encoder output at the last history token, projected text of every item) / temperature [B, N + 1];
        the padding item gets -inf. Scores the whole catalogue: the dense loss and the exact `dense` ranking."""
        logits = cosine_logits(self.dense_user(interaction, memory), self.catalogue_keys(vectors),
                               self.dense_temperature, keys_normalized=True)
        logits[:, 0] = float("-inf")
        return logits

    def dense_loss(self, interaction, memory, vectors=None):
        """Cross-entropy of the dense logits over items; with `dense_mask_cold` the cold-start items are no
        candidates (official src/training.py: `logits[:, unseen_ids - 1] = -100`), so they get no gradient."""
        logits = self.dense_logits(interaction, memory, vectors)
        if self.dense_mask_cold and len(self.cold_items):
            logits = logits.index_fill(1, self.cold_items, float("-inf"))
        return F.cross_entropy(logits, interaction[self.POS_ITEM_ID])

    def calculate_loss(self, interaction):
        vectors = self.item_vectors()  # one text-MLP pass per step: the history's input and the dense keys
        encoded = self.encode(interaction, vectors)
        return self.next_sid_loss(interaction, encoded) + self.dense_loss_weight * self.dense_loss(
            interaction, encoded[2], vectors)

    def generate_topk(self, interaction, k):
        return self.ranked_topk(interaction, k, self.inference)

    def selection_topk(self, interaction, k):
        """The ranking checkpoints are selected on (the trainer's validation hook): `liger_valid_inference`. The
        official code selects on dense retrieval (src/training.py evaluate_helper, `evaluation_method: dense`),
        scored on the in-set validation users (`valid_metric: inset_ndcg@10`)."""
        return self.ranked_topk(interaction, k, self.valid_inference)

    def ranked_topk(self, interaction, k, inference):
        encoded = self.encode(interaction)
        if inference == "generative":
            output = self.beam_search(encoded, k)
            return output.items[:, :k], output.scores[:, :k]
        if inference == "dense":
            scores, items = self.dense_logits(interaction, encoded[2]).topk(k, dim=1)
            return items, scores
        return self.hybrid_topk(interaction, encoded, k)

    def hybrid_topk(self, interaction, encoded, k):
        """The beam's candidates and the cold-start items re-ranked by their dense scores, computed for those items
        alone (rows of the cached catalogue keys): per user the cost of C + M scores, not of the catalogue's N.
        The ranking `dense_logits` and `rerank_candidates` give, equal dense scores in ascending item order."""
        user = self.dense_user(interaction, encoded[2])
        keys = self.catalogue_keys()
        candidates = self.candidate_items(encoded)
        candidate_scores = cosine_logits(user, keys[candidates.clamp(min=0)], self.dense_temperature, "bd,bcd->bc",
                                         keys_normalized=True)
        cold_scores = cosine_logits(user, keys[self.cold_items], self.dense_temperature, keys_normalized=True)
        return rerank_scored_candidates(candidates, candidate_scores, self.cold_items, cold_scores, k)

    def candidate_items(self, encoded):
        """The hybrid's generative candidates [B, liger_candidates]: the best items of the beam (official
        src/evaluation.py generate_then_dense keeps the first 20 of 100 sequences); -1 where fewer exist."""
        return self.beam_search(encoded, self.candidates).items[:, : self.candidates]
