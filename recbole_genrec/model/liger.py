"""LIGER — Unifying Generative and Dense Retrieval for Sequential Recommendation (Yang et al., 2024).

Representation and tokenization: TIGER's (item text -> RQ-VAE 3 x 256 + collision digit). Backbone: TIGER's
encoder-decoder with 6 + 6 layers; the input embedding of every history token is its semantic-ID token embedding
+ an MLP projection of its item's text embedding + an item-position and a digit-position embedding. Training:
next-SID cross-entropy + a dense loss: the encoder output at the last history token, compared by cosine /
temperature (0.07) with the projected text embeddings of all items, cross-entropy over items.

Inference (`liger_inference`):
  hybrid      LIGER: the beam search's items (beam_size of them, unconstrained as in the paper unless
              `constrained_beam`) united with every cold-start item (never in the training split), re-ranked by
              the dense score (inference/rerank.py).
  dense       dense retrieval alone: every item ranked by the dense score.
  generative  the beam search alone (TIGER's inference).
Cold-start items come from the training split only (`train_item_mask`, set by data.mark_training_items); the text
embeddings of all items are content, known for every item, and indexed by the history or scored as a catalogue,
never looked up through the target. Defaults: recbole_genrec/properties/model/LIGER.yaml.
"""
import torch
import torch.nn.functional as F
from torch import nn

from recbole_genrec.inference import rerank_candidates
from recbole_genrec.model.layers import cosine_logits
from recbole_genrec.model.seq2seq import SemanticIdSeq2Seq
from recbole_genrec.representation import item_text_embeddings


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
        # Item content (a derived artefact, reloaded from the cache, not stored in checkpoints).
        text = torch.from_numpy(item_text_embeddings(config, dataset)).float()
        self.register_buffer("item_text", text, persistent=False)
        d_model = int(config["d_model"])
        self.text_projection = nn.Sequential(nn.Linear(text.shape[1], d_model), nn.ReLU(), nn.Linear(d_model, d_model))
        self.item_position = nn.Embedding(self.max_seq_length, d_model)
        self.digit_position = nn.Embedding(self.n_levels, d_model)
        for embedding in (self.item_position, self.digit_position):
            nn.init.normal_(embedding.weight, std=0.02)
        self.dense_temperature = float(config["dense_temperature"])
        self.dense_loss_weight = float(config["dense_loss_weight"])
        self.inference = config["liger_inference"]

    def encode(self, interaction):
        """As TIGER's, with every history token's embedding + projected item text + item and digit positions."""
        input_ids, mask = self.encoder_inputs(interaction)
        items, _ = self.history(interaction)
        per_item = self.text_projection(self.item_text[items]) + self.item_position.weight[: items.shape[1]]
        extra = per_item.unsqueeze(2) + self.digit_position.weight  # [B, T, L, d]
        extra = (extra * (items != 0)[:, :, None, None]).flatten(1, 2)
        if self.user_buckets:
            extra = torch.cat([extra.new_zeros(len(extra), 1, extra.shape[-1]), extra], dim=1)
        return input_ids, mask, self.backbone.encode(input_ids, mask, extra)

    def dense_logits(self, interaction, memory):
        """cos(encoder output at the last history token, projected text of every item) / temperature [B, N + 1];
        the padding item gets -inf."""
        _, lengths = self.history(interaction)
        last = lengths * self.n_levels - 1 + (1 if self.user_buckets else 0)
        user = memory[torch.arange(len(memory), device=memory.device), last]
        logits = cosine_logits(user, self.text_projection(self.item_text), self.dense_temperature)
        logits[:, 0] = float("-inf")
        return logits

    def calculate_loss(self, interaction):
        encoded = self.encode(interaction)
        dense_loss = F.cross_entropy(self.dense_logits(interaction, encoded[2]), interaction[self.POS_ITEM_ID])
        return self.next_sid_loss(interaction, encoded) + self.dense_loss_weight * dense_loss

    def generate_topk(self, interaction, k):
        encoded = self.encode(interaction)
        if self.inference == "generative":
            output = self.beam_search(encoded, k)
            return output.items[:, :k], output.scores[:, :k]
        dense = self.dense_logits(interaction, encoded[2])
        if self.inference == "dense":
            scores, items = dense.topk(k, dim=1)
            return items, scores
        beams = self.beam_search(encoded, k).items
        return rerank_candidates(beams, self.cold_items, dense, k)
