"""RPG — Generating Long Semantic IDs in Parallel for Recommendation (Hou et al., KDD 2025).

Representation: item text -> sentence embedding (the shared pipeline). Tokenization: OPQ with faiss, m unordered
digits x 256 codes, fitted on the items of the training sequences (`tokenizer_fit_on: train`). Backbone: GPT-2-style
decoder, 2 layers, 4 heads, width 448, FFN 1024, history 50; an item's input embedding is the mean of its m digit
embeddings. Training: multi-token prediction — m residual heads on a hidden state; per digit, logits =
cosine(head output, that digit's code embeddings) / temperature; CE averaged over digits and targets. Item score =
mean over digits of the per-digit log-softmax of the item's code.

Training rows (`rpg_all_positions`, default True): as the official code (`genrec/models/RPG/tokenizer.py`,
`tokenize_function` / `_tokenize_first_n_items` / `_tokenize_later_items`; loss in `genrec/models/RPG/model.py`,
`forward`), each user's training sequence is read once per epoch with the next-item loss at every position, not
once per prefix. RecBole's sequential split holds one row per prefix (history of at most N = MAX_ITEM_LIST_LENGTH
items, target); the class's tokenizer hook (`build_semantic_ids`, run by GenRecDataset.build on the training
split) keeps, per user, the longest row whose history is shorter than N (every shorter row is a prefix of it,
checked) and every row with a full history of N items (a sliding window once the sequence is longer than N), and
drops the rest (`sequence_rows`). `calculate_loss` then scores, on a row with fewer than N history items, every
position t (target: the next history item, the row's target at the last position), and on a full row only its last
position. The loss terms (history, target) are exactly the prefix rows' (one each), the loss is their mean over the
batch's targets and digits; only the batching differs (rows of whole sequences, as the official batches of 256
sequences). The official code puts the target right after N items into its first-N row (one row of N + 1 items);
here it is that user's first full row, with the same history. `rpg_all_positions: False`: one target per RecBole
row (every prefix a row), the loss at the last position.

Inference, as the official pipeline (`genrec/pipeline.py` `run`): checkpoints are selected on exact scoring
(`selection_topk`: the whole catalogue scored by `full_sort_predict`, like SASRec; cheap at 10^4-10^5 items), and the
best one is tested with `rpg_inference` (`generate_topk`):
  graph  the paper's graph-constrained decoding (recbole_genrec/inference/graph_decoding.py), which the official
         pipeline switches on for the test only (`generate_w_decoding_graph = True`).
  exact  the exact ranking again.

Code embeddings: one table of m x K digit embeddings, shared by the input (mean of digits) and the output (cosine
logits); the graph's item-item similarity uses the same learned table, rebuilt whenever it has changed.
Defaults: properties/model/RPG.yaml.
"""
import logging

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_genrec.inference.graph_decoding import build_item_graph, graph_topk, random_start_items
from recbole_genrec.model.base import GenerativeRecommender
from recbole_genrec.model.layers import DecoderOnly, cosine_logits

logger = logging.getLogger("recbole_genrec")


def sequence_rows(users, item_lists, lengths, targets):
    """Rows of RecBole's prefix-augmented training split that hold each user's training sequence once: numpy users
    [R], item_lists [R, N] (left-aligned, 0-padded), lengths [R], targets [R] -> sorted indices of the kept rows.

    Kept: per user, the longest row with a history shorter than N (its all-position row) and every row with a full
    history of N items (scored at the last position only). Raises ValueError unless the dropped rows are exactly the
    prefixes of their user's kept row (each history length 1 .. kept length once, same items, the target the next
    item of the kept row), i.e. unless the kept rows carry the same (history, target) loss terms."""
    users, lengths, targets = (np.asarray(a, dtype=np.int64) for a in (users, lengths, targets))
    item_lists = np.asarray(item_lists, dtype=np.int64)
    width = item_lists.shape[1]
    short = np.flatnonzero(lengths < width)
    if len(short) == 0:
        return np.arange(len(users))
    if lengths[short].min() < 1:
        raise ValueError("rpg_all_positions: a training row has an empty history")
    by_user = short[np.lexsort((-lengths[short], users[short]))]  # per user, longest first
    first = np.ones(len(by_user), dtype=bool)
    first[1:] = users[by_user][1:] != users[by_user][:-1]
    longest = by_user[first]
    kept_of = np.full(users.max() + 1, -1, dtype=np.int64)
    kept_of[users[longest]] = longest
    kept = kept_of[users[short]]
    row_len, kept_len = lengths[short], lengths[kept]
    inside = np.arange(width)[None, :] < row_len[:, None]
    same_items = ((item_lists[short] == item_lists[kept]) | ~inside).all(1)
    prefix = row_len < kept_len
    next_item = item_lists[kept, np.minimum(row_len, width - 1)]
    same_target = np.where(prefix, next_item == targets[short], short == kept)
    rows_per_user = np.bincount(users[short], minlength=len(kept_of))[users[longest]]
    distinct = len(np.unique(users[short] * (width + 1) + row_len)) == len(short)
    if not (same_items.all() and same_target.all() and distinct and np.array_equal(rows_per_user, lengths[longest])):
        raise ValueError(
            "rpg_all_positions: the training split's rows are not the prefixes of each user's sequence (RecBole's "
            "leave-one-out augmentation gives them), so the loss at every position of a user's longest row would "
            "not equal the per-row losses. Set rpg_all_positions: False (one target per row)."
        )
    return np.sort(np.concatenate([longest, np.flatnonzero(lengths >= width)]))


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

    @classmethod
    def prepare_training_split(cls, config, dataset, train_dataset):
        """With `rpg_all_positions`, the training split reduced to the rows that hold each user's sequence once
        (`sequence_rows`); `train_dataset.prefix_rows` keeps the number of prefix rows (= loss targets) they hold."""
        if config["rpg_all_positions"]:
            inter = train_dataset.inter_feat
            list_field = train_dataset.iid_field + config["LIST_SUFFIX"]
            keep = sequence_rows(inter[train_dataset.uid_field].numpy(), inter[list_field].numpy(),
                                 inter[config["ITEM_LIST_LENGTH_FIELD"]].numpy(),
                                 inter[train_dataset.iid_field].numpy())
            train_dataset.prefix_rows = len(inter)
            train_dataset.inter_feat = inter[torch.from_numpy(keep)]
            logger.info(f"RPG (rpg_all_positions): {len(keep):,} training rows (each user's sequence once, the loss "
                        f"at every position) hold the {len(inter):,} prefix rows' targets")

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
            resid_dropout=float(config["resid_dropout"]), layer_norm_eps=float(config["layer_norm_eps"]),
        )
        self.heads = ResidualHeads(self.n_digits, d_model, int(config["num_head_layers"] or 1))
        self.all_positions = bool(config["rpg_all_positions"])
        self.temperature = float(config["rpg_temperature"])
        self.score_chunk_size = int(config["score_chunk_size"] or 1024)
        self.inference = config["rpg_inference"]
        self.num_beams = int(config["num_beams"])
        self.num_edges = int(config["num_edges"])
        self.propagation_steps = int(config["propagation_steps"])
        self.graph_chunk_size = int(config["graph_chunk_size"] or 2048)
        self.graph_seed = int(config["seed"] or 0)
        self._graph, self._graph_key, self._start_items = None, None, None

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
        if self.all_positions:
            return self.sequence_loss(interaction)
        target_codes = self.item_codes[interaction[self.POS_ITEM_ID]]  # [B, m]
        logits = self.digit_logits(interaction)
        return F.cross_entropy(logits.flatten(0, 1), target_codes.flatten())

    def loss_positions(self, item_seq, item_seq_len, target):
        """(bool [B, T] positions that carry a loss, long [B, T] their target items). A row with fewer than T history
        items is a user's sequence from its start: every position t < length, target item t + 1 (the row's target
        at the last one). A full row (T items, a sliding window): its last position only."""
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        last = (item_seq_len - 1).unsqueeze(1)
        labels = torch.cat([item_seq[:, 1:], torch.zeros_like(item_seq[:, :1])], dim=1)
        labels = labels.scatter(1, last, target.unsqueeze(1))
        whole = (item_seq_len < item_seq.shape[1]).unsqueeze(1)
        scored = (positions < item_seq_len.unsqueeze(1)) & (whole | (positions == last))
        return scored, labels

    def sequence_loss(self, interaction):
        """The official loss (`model.py` `forward`): the next-item loss at every scored position of the rows (see
        `loss_positions`), per-digit CE averaged over all scored positions of the batch and over digits."""
        item_seq, item_seq_len = self.history(interaction)
        scored, labels = self.loss_positions(item_seq, item_seq_len, interaction[self.POS_ITEM_ID])
        hidden = self.backbone(self.item_embeddings(item_seq), mask=item_seq != 0)  # [B, T, D], causal
        states = self.heads(hidden[scored])  # [P, m, D]: the heads act per position, so only the scored ones
        logits = cosine_logits(states, self.code_embeddings(), self.temperature, "bmd,mkd->bmk")
        return F.cross_entropy(logits.flatten(0, 1), self.item_codes[labels[scored]].flatten())

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

    def selection_topk(self, interaction, k):
        """The ranking checkpoints are selected on: exact scoring, as the official trainer validates."""
        scores, items = self.full_sort_predict(interaction).topk(k, dim=1)
        return items, scores

    def generate_topk(self, interaction, k):
        """The test ranking, `rpg_inference`."""
        if self.inference == "graph":
            return self._graph_topk(interaction, k)
        return self.selection_topk(interaction, k)

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
