"""RPG — Generating Long Semantic IDs in Parallel for Recommendation (Hou et al., KDD 2025).

Representation: item text -> sentence embedding (the shared pipeline). Tokenization: OPQ with faiss, m unordered
digits x 256 codes, fitted on the items of the training sequences (`tokenizer_fit_on: train`). Backbone: GPT-2-style
decoder, 2 layers, 4 heads, width 448, FFN 1024, history 50; an item's input embedding is the mean of its m digit
embeddings. Training: multi-token prediction — m residual heads on the last hidden state; per digit, logits =
cosine(head output, that digit's code embeddings) / temperature; CE averaged over digits. Item score = mean over
digits of the per-digit log-softmax of the item's code.

Inference (`rpg_inference`):
  exact  the whole catalogue is scored (`full_sort_predict`), exactly like SASRec is; cheap at 10^4-10^5 items.
  graph  the paper's graph-constrained decoding (recbole_genrec/inference/graph_decoding.py).
The shared trainer picks its path with `hasattr(model, "generate_topk")`, so the class does NOT define
`generate_topk`; in graph mode `__init__` binds it as an instance attribute (`self.generate_topk = self._graph_topk`),
in exact mode it stays undefined and the trainer scores through `full_sort_predict`.

Code embeddings: one table of m x K digit embeddings, shared by the input (mean of digits) and the output (cosine
logits); the graph's item-item similarity uses the same learned table, rebuilt whenever it has changed.
Defaults: properties/model/RPG.yaml.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_genrec.inference.graph_decoding import build_item_graph, graph_topk, random_start_items
from recbole_genrec.model.base import GenerativeRecommender
from recbole_genrec.model.layers import DecoderOnly, cosine_logits


class ResidualHeads(nn.Module):
    """m independent heads, each h_d = x + SiLU(W_d x + b_d) (Medusa-style residual block), computed in one einsum."""

    def __init__(self, num_heads, d_model, num_layers=1):
        super().__init__()
        # As the official ResBlock: zero weight (every head starts near the identity), nn.Linear's default bias.
        self.weight = nn.Parameter(torch.zeros(num_layers, num_heads, d_model, d_model))
        bound = d_model ** -0.5
        self.bias = nn.Parameter(torch.empty(num_layers, num_heads, d_model).uniform_(-bound, bound))

    def forward(self, x):
        """x [B, D] -> [B, m, D]."""
        h = x.unsqueeze(1).expand(-1, self.weight.shape[1], -1)
        for weight, bias in zip(self.weight, self.bias):
            h = h + F.silu(torch.einsum("bmd,mde->bme", h, weight) + bias)
        return h


class RPG(GenerativeRecommender):
    @staticmethod
    def beam_width_key(config):
        # exact scoring ranks the whole catalogue; graph decoding keeps `num_beams` candidates
        return "num_beams" if config["rpg_inference"] == "graph" else None

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._init_rpg(config)

    def _init_rpg(self, config):
        """Everything RPG adds on top of GenerativeRecommender (needs `item_codes`, `vocab_sizes`, `n_levels`,
        `max_seq_length`)."""
        sizes = set(self.vocab_sizes)
        if len(sizes) != 1:
            raise ValueError(f"RPG needs the same codebook size at every digit, got {self.vocab_sizes}: use the OPQ "
                             f"tokenizer with collision: none")
        self.codebook_size = sizes.pop()
        self.n_digits = self.n_levels
        d_model = int(config["d_model"])
        self.digit_embedding = nn.Embedding(self.n_digits * self.codebook_size, d_model)
        nn.init.normal_(self.digit_embedding.weight, std=0.02)
        self.register_buffer("digit_offsets", torch.arange(self.n_digits) * self.codebook_size)
        self.backbone = DecoderOnly(
            d_model=d_model, num_heads=int(config["num_heads"]), d_ff=int(config["d_ff"]),
            num_layers=int(config["num_layers"]), max_positions=self.max_seq_length,
            embd_dropout=float(config["embd_dropout"]), attn_dropout=float(config["attn_dropout"]),
            resid_dropout=float(config["resid_dropout"]),
        )
        self.heads = ResidualHeads(self.n_digits, d_model, int(config["num_head_layers"] or 1))
        self.temperature = float(config["rpg_temperature"])
        self.score_chunk_size = int(config["score_chunk_size"] or 1024)
        self.inference = config["rpg_inference"]
        self.num_beams = int(config["num_beams"])
        self.num_edges = int(config["num_edges"])
        self.propagation_steps = int(config["propagation_steps"])
        self.graph_chunk_size = int(config["graph_chunk_size"] or 2048)
        self.graph_seed = int(config["seed"] or 0)
        self._graph, self._graph_key, self._start_items = None, None, None
        if self.inference == "graph":
            # instance attribute: the trainer's hasattr(model, "generate_topk") is True only in graph mode
            self.generate_topk = self._graph_topk

    # ---- embeddings and forward -----------------------------------------------------------------------------
    def code_embeddings(self):
        """[m, K, D], the learned digit code embeddings."""
        return self.digit_embedding.weight.view(self.n_digits, self.codebook_size, -1)

    def item_embeddings(self, items):
        """items [...] -> mean of their m digit embeddings [..., D]; the padding item 0 -> zeros."""
        index = (self.item_codes[items] + self.digit_offsets).view(-1, self.n_digits)
        embedded = F.embedding_bag(index, self.digit_embedding.weight, mode="mean")  # no [.., m, D] intermediate
        return embedded.view(*items.shape, -1) * (items != 0).unsqueeze(-1)

    def forward(self, item_seq, item_seq_len):
        """History -> final hidden state at the last real position [B, D]."""
        hidden = self.backbone(self.item_embeddings(item_seq), mask=item_seq != 0)
        return self.gather_indexes(hidden, item_seq_len - 1)

    def digit_logits(self, interaction):
        """Per-digit logits [B, m, K] = cosine(head output, digit code embeddings) / temperature."""
        state = self.forward(*self.history(interaction))
        return cosine_logits(self.heads(state), self.code_embeddings(), self.temperature, "bmd,mkd->bmk")

    def calculate_loss(self, interaction):
        target_codes = self.item_codes[interaction[self.POS_ITEM_ID]]  # [B, m]
        logits = self.digit_logits(interaction)
        return F.cross_entropy(logits.flatten(0, 1), target_codes.flatten())

    # ---- exact scoring ------------------------------------------------------------------------------------------
    def digit_log_probs(self, interaction):
        return F.log_softmax(self.digit_logits(interaction), dim=-1)

    def score_items(self, log_probs, items):
        """log_probs [B, m, K], items long [B, C] -> mean over digits of log p(item's digit code) [B, C]."""
        codes = self.item_codes[items]  # [B, C, m]
        return log_probs.gather(2, codes.transpose(1, 2)).mean(1)

    def full_sort_predict(self, interaction):
        """[B, n_items] exact scores of every item; the padding item 0 gets -inf."""
        flat = self.digit_log_probs(interaction).flatten(1)  # [B, m * K]
        index = self.item_codes + self.digit_offsets  # [N + 1, m]
        scores = torch.cat(
            [flat[:, index[start:start + self.score_chunk_size]].mean(-1)
             for start in range(0, len(index), self.score_chunk_size)], dim=1,
        )
        scores[:, 0] = -float("inf")
        return scores

    def predict(self, interaction):
        log_probs = self.digit_log_probs(interaction)
        return self.score_items(log_probs, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)

    # ---- graph-constrained decoding -----------------------------------------------------------------------------
    def item_graph(self):
        """The k-NN item graph of the current code embeddings (rebuilt when the weights changed)."""
        weight = self.digit_embedding.weight
        key = (weight.data_ptr(), weight._version, weight.device)
        if self._graph is None or self._graph_key != key:
            self._graph = build_item_graph(self.code_embeddings().detach(), self.item_codes, self.num_edges,
                                           self.graph_chunk_size)
            self._graph_key = key
        return self._graph

    def _graph_topk(self, interaction, k):
        log_probs = self.digit_log_probs(interaction)
        n_items = self.item_codes.shape[0] - 1
        cached = self._start_items
        if cached is None or len(cached) < len(log_probs) or cached.device != log_probs.device:
            # drawn once per evaluation size and device: row i is the same for any batch size (one seeded stream)
            self._start_items = random_start_items(len(log_probs), n_items, self.num_beams, self.graph_seed,
                                                   log_probs.device)
        start = self._start_items[:len(log_probs)]
        return graph_topk(lambda items: self.score_items(log_probs, items), self.item_graph(), start, k,
                          self.num_beams, self.propagation_steps)
