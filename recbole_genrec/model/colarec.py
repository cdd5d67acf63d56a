"""ColaRec — Content-Based Collaborative Generation for Recommender Systems (Wang et al., CIKM 2024).

Representation: collaborative item embeddings of RecBole's LightGCN trained on every interaction of the training
split (the item IDs' source, "GIDs"; items never in training keep LightGCN's own vectors, `cf_untrained_items`) and
the items' text (their content). Tokenization: hierarchical constrained k-means, 32 branches per level, a cluster at
most its subtree's leaves (1,024 then 32 items, as hierarchical_cluster.py), the last level the item's index inside
its leaf cluster (tokenization/hkmeans.py), so GIDs are unique by construction.

Backbone, as the official models.py (V4T5smallModel): a T5 encoder-decoder, loaded from a local Hugging Face T5
folder (`pretrained_t5_path`: the official model starts from t5-small) or, when that is empty, T5-small's shape from
random weights. The encoder reads a task token, then per item its item-ID embedding followed by its content, then
one EOS whose encoder state is the sequence's representation; the whole input is cut at `max_encoder_tokens`. The
content is the item text's first `max_text_tokens - 1` word pieces through T5's own embedding (pretrained path), or
one soft token, the projected MiniLM text embedding (random-init path: word pieces mean nothing to random weights).
The decoder reads one code embedding table per position and scores each level with its own head over the level's
codes plus one unused class (33-way for 32 branches, the official `cid_embed_list` and `centroids`).

Training, as the official code: user -> GID generation (10 history items sampled in random order) and item -> GID
indexing for the positive and a negative item (weight 0.08 together), a BPR term between the user's and the two
items' representations (weight 1), and a BPR-style contrastive term pulling the positive item towards another item
of its leaf cluster (the item itself only when alone there; weight 0.1), that item read with `sample_user_num`
user-ID slots after its content: users drawn from its training interactions (a user table of its own, used by this
term only, never at inference). The negative is a uniform item outside the user's training history and the
positive's leaf cluster. Inference: the shared constrained beam search (beam 100) on the 20 most recent items, most
recent first; items of the history dropped. Defaults: properties/model/ColaRec.yaml; deviations in the README.
"""
import logging

import torch
import torch.nn.functional as F
from torch import nn

from recbole_genrec.data.semantic_ids import fit_semantic_ids
from recbole_genrec.inference import PrefixConstraints, SemanticIdVocab, beam_search, top_candidates
from recbole_genrec.model.base import GenerativeRecommender
from recbole_genrec.model.layers import EncoderDecoder
from recbole_genrec.model.layers.hf_t5 import from_hf_t5
from recbole_genrec.representation import (item_cf_embeddings, item_text_embeddings, item_text_tokens,
                                           load_local_t5)
from recbole_genrec.representation.text import check_local_t5
from recbole_genrec.representation.collaborative import training_interactions

logger = logging.getLogger("recbole_genrec")

USER_TASK, ITEM_TASK = 0, 1  # rows of the task-token table (official `prompt`)
NEGATIVE_DRAWS = 100  # redraws of negatives that fall in the user's history before giving up


class ColaRec(GenerativeRecommender):
    required_tokenizer = ("HKMeans", "ColaRec's GIDs come from a k-means tree")

    @classmethod
    def build_semantic_ids(cls, config, dataset, train_dataset):
        if config["pretrained_t5_path"]:
            check_local_t5(config["pretrained_t5_path"])  # before the CF model trains
        return fit_semantic_ids(config, dataset, item_cf_embeddings(config, dataset, train_dataset),
                                fit_mask=cls.tokenizer_fit_mask(config, train_dataset))

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.vocab = SemanticIdVocab(self.vocab_sizes)
        self.catalogue = PrefixConstraints(self.item_codes, self.vocab_sizes)
        self.max_encoder_tokens = int(config["max_encoder_tokens"])
        t5_path = config["pretrained_t5_path"]
        self.reads_word_pieces = bool(t5_path)
        if self.reads_word_pieces:
            hf_model, tokenizer = load_local_t5(t5_path)
            self.backbone = from_hf_t5(hf_model)  # T5's sizes, word-piece embedding, encoder and decoder weights
            self.eos_token = int(tokenizer.eos_token_id)
            tokens, lengths = item_text_tokens(config, dataset, tokenizer, int(config["max_text_tokens"]) - 1)
            self.register_buffer("item_text_tokens", tokens, persistent=False)  # content: data, not weights
            logger.info(f"ColaRec: pretrained T5 from {t5_path}; items read as up to {tokens.shape[1]} word pieces "
                        f"(mean {lengths[1:].float().mean():.1f})")
        else:
            self.backbone = EncoderDecoder(
                vocab_size=2, d_model=int(config["d_model"]), num_heads=int(config["num_heads"]),
                d_kv=int(config["d_kv"]), d_ff=int(config["d_ff"]),
                num_encoder_layers=int(config["num_encoder_layers"]),
                num_decoder_layers=int(config["num_decoder_layers"]), dropout=float(config["dropout"]),
            )  # tokens: PAD and EOS only; the content is a projected vector
            self.eos_token = self.vocab.eos_id
            text = torch.from_numpy(item_text_embeddings(config, dataset)).float()
            self.register_buffer("item_text", text, persistent=False)  # content: a cached artefact, not a weight
            self.content_projection = nn.Linear(text.shape[1], self.backbone.d_model)
            lengths = torch.ones(len(text), dtype=torch.long)
            logger.info("ColaRec: no pretrained_t5_path, a T5 from random weights; items read as their projected "
                        "text embedding (one soft token)")
        lengths[0] = 0
        self.register_buffer("content_length", lengths, persistent=False)
        self.slots_per_item = 1 + int(lengths.max())  # the ID and the longest content
        d_model = self.backbone.d_model
        self.task_embedding = nn.Embedding(2, d_model)
        self.item_id_embedding = nn.Embedding(self.n_items, d_model, padding_idx=0)
        nn.init.normal_(self.item_id_embedding.weight, std=1.0)  # the scale of T5's token embeddings
        # per decoder position its code-embedding table (row 0: the start, else the previous level's code + 1) and
        # per level its head (class 0 unused, code c is class c + 1), as the official 1-based codes
        classes = max(self.vocab_sizes) + 1
        self.code_embeddings = nn.ModuleList(nn.Embedding(classes, d_model) for _ in self.vocab_sizes)
        self.code_heads = nn.ModuleList(nn.Linear(d_model, size + 1) for size in self.vocab_sizes)
        self.sampled_items = int(config["sample_item_num"])
        self.generation_weight = float(config["generation_weight"])
        self.contrastive_weight = float(config["contrastive_weight"])
        self._leaf_groups(self.item_codes)
        history = training_interactions(dataset)  # the model is built on the training split
        keys = history[dataset.uid_field] * self.n_items + history[dataset.iid_field]
        self.register_buffer("history_keys", keys, persistent=False)  # sorted (user, item) keys
        self.sampled_users = int(config["sample_user_num"])
        if self.sampled_users > 0:
            # the contrastive positive's user-ID slots (official `atomid_user_embed`, PyTorch's N(0, 1) init; row 0
            # stands for "no training user", as the official fallback user 0)
            self.user_id_embedding = nn.Embedding(dataset.user_num, d_model)
            self._item_users(history[dataset.uid_field], history[dataset.iid_field])

    def _leaf_groups(self, codes):
        """Items ordered by their leaf cluster (all codes but the last): each item's group start and size, to draw
        another item of its cluster (the contrastive positive)."""
        prefix = self.catalogue.prefix_key(codes[1:, :-1])
        order = torch.argsort(prefix, stable=True)
        _, inverse, counts = torch.unique(prefix[order], return_inverse=True, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        position = torch.empty_like(order)
        position[order] = torch.arange(len(order))
        group = inverse[position]
        self.register_buffer("leaf_order", order + 1, persistent=False)  # item ids, cluster by cluster
        self.register_buffer("leaf_start", torch.cat([starts.new_zeros(1), starts[group]]), persistent=False)
        self.register_buffer("leaf_size", torch.cat([counts.new_ones(1), counts[group]]), persistent=False)

    def _item_users(self, users, items):
        """Each item's training users (the official `item_seq`), item by item: the users to draw an item's user-ID
        slot from."""
        order = torch.argsort(items, stable=True)
        counts = torch.bincount(items, minlength=self.n_items)
        self.register_buffer("item_users", users[order], persistent=False)
        self.register_buffer("item_user_start", torch.cumsum(counts, 0) - counts, persistent=False)
        self.register_buffer("item_user_count", counts, persistent=False)

    def sample_item_users(self, items):
        """items long [B] -> [B, sample_user_num] users of each item's training interactions, as the official
        `user_sampling`: without replacement, with replacement when the item has fewer users than draws, user 0 when
        it has none (official `item_seq.get(iid, [0])`)."""
        count = self.item_user_count[items]
        replace = count < self.sampled_users
        drawn = items.new_zeros(len(items), 0)  # positions in each item's user list
        for draw in range(self.sampled_users):
            left = torch.where(replace, count, count - draw).clamp(min=1)
            index = (torch.rand(items.shape, device=items.device) * left).long()
            for earlier in drawn.sort(1).values.unbind(1):  # without replacement: skip the positions drawn already
                index = index + (~replace & (index >= earlier)).long()
            drawn = torch.cat([drawn, index.unsqueeze(1)], 1)
        users = self.item_users[(self.item_user_start[items].unsqueeze(1) + drawn).clamp(max=len(self.item_users) - 1)]
        return users.masked_fill((count == 0).unsqueeze(1), 0)

    # ---- encoder inputs ---------------------------------------------------------------------------------------
    def encoder_layout(self, items):
        """items long [B, M] (0 = none, real items first) -> what each encoder position holds: (slot_items [B, S],
        the item of the position or 0; slot_parts [B, S], 0 its item-ID embedding, j >= 1 its j-th content token,
        -1 the task token, the EOS or padding; mask bool [B, S]; eos [B], the EOS position). As the official
        tokenizer: [task] + per item [ID, content...], cut at max_encoder_tokens - 1 positions, then EOS."""
        users, per_row = items.shape
        lengths = (1 + self.content_length[items]) * (items != 0)  # [B, M]
        starts = 1 + lengths.cumsum(1) - lengths
        parts = torch.arange(self.slots_per_item, device=items.device)
        positions = starts.unsqueeze(2) + parts  # [B, M, 1 + C]
        kept = (parts < lengths.unsqueeze(2)) & (positions < self.max_encoder_tokens - 1)
        eos = (1 + lengths.sum(1)).clamp(max=self.max_encoder_tokens - 1)
        width = int(eos.max()) + 1
        rows = torch.arange(users, device=items.device).view(-1, 1, 1)
        flat = (rows * width + positions)[kept]
        slot_items = items.new_zeros(users * width)
        slot_parts = torch.full_like(slot_items, -1)
        slot_items[flat] = items.unsqueeze(2).expand_as(positions)[kept]
        slot_parts[flat] = parts.expand_as(positions)[kept]
        mask = torch.arange(width, device=items.device) <= eos.unsqueeze(1)
        return slot_items.view(users, width), slot_parts.view(users, width), mask, eos

    def content_embeddings(self, slot_items, slot_parts):
        """The content token at every position [B, S] -> [B, S, d] (meaningful where slot_parts >= 1)."""
        if self.reads_word_pieces:
            return self.backbone.embedding(self.item_text_tokens[slot_items, (slot_parts - 1).clamp(min=0)])
        return self.content_projection(self.item_text[slot_items])

    def encode_items(self, items, task, users=None):
        """items long [B, M] -> (memory [B, S, d], mask [B, S], representation [B, d]: the encoder state at EOS).
        users long [B, U]: user-ID slots after the content, before the EOS (the official tokenizer's `ty='item'`
        layout, used for the contrastive positive only; never at inference)."""
        slot_items, slot_parts, mask, eos = self.encoder_layout(items)
        ids = self.item_id_embedding(slot_items)
        hidden = torch.where((slot_parts == 0).unsqueeze(2), ids,
                             self.content_embeddings(slot_items, slot_parts).to(ids.dtype))
        rows = torch.arange(len(items), device=items.device)
        hidden[:, 0] = self.task_embedding.weight[task].to(ids.dtype)
        if users is not None and users.shape[1]:
            extra = users.shape[1]
            hidden = torch.cat([hidden, hidden.new_zeros(len(items), extra, hidden.shape[2])], 1)
            hidden[rows.unsqueeze(1), eos.unsqueeze(1) + torch.arange(extra, device=items.device)] = \
                self.user_id_embedding(users).to(ids.dtype)
            eos = eos + extra
            mask = torch.arange(hidden.shape[1], device=items.device) <= eos.unsqueeze(1)
        hidden[rows, eos] = self.backbone.embedding.weight[self.eos_token].to(ids.dtype)
        memory = self.backbone.encode_embeddings(hidden, mask)
        return memory, mask, memory[rows, eos]

    def user_items(self, interaction):
        """Training: up to `sample_item_num` history items in random order (the official sampling); evaluation:
        the whole (MAX_ITEM_LIST_LENGTH) history, most recent first. Real items first, 0 after."""
        items, lengths = self.history(interaction)
        positions = torch.arange(items.shape[1], device=items.device)
        real = positions < lengths.unsqueeze(1)
        if self.training:
            keys = torch.rand(items.shape, device=items.device).masked_fill(~real, -1.0)
            chosen = keys.topk(min(self.sampled_items, items.shape[1]), dim=1).indices
            return items.gather(1, chosen) * (keys.gather(1, chosen) >= 0)
        newest_first = (lengths.unsqueeze(1) - 1 - positions).clamp(min=0)
        return items.gather(1, newest_first) * real

    # ---- decoder: per-level code embeddings and heads ---------------------------------------------------------
    def code_logits(self, hidden, level):
        """Decoder state(s) [..., d] at `level` -> logits [..., 1 + codes] (class 0 unused, code c at c + 1); the
        official T5 config ties embeddings, so the state is scaled by d_model ** -0.5 first."""
        return self.code_heads[level](hidden * self.backbone.d_model ** -0.5)

    def gid_loss(self, memory, mask, items):
        """Next-code cross-entropy of `items`' GIDs, decoded from `memory` (teacher forcing)."""
        classes = self.item_codes[items] + 1  # [N, L], official 1-based codes
        previous = torch.cat([torch.zeros_like(classes[:, :1]), classes[:, :-1]], dim=1)  # 0 = start
        inputs = torch.stack([table(previous[:, level]) for level, table in enumerate(self.code_embeddings)], 1)
        hidden = self.backbone.decode_embeddings(inputs, memory, mask)
        logits = torch.stack([self.code_logits(hidden[:, level], level).float()
                              for level in range(len(self.code_heads))], 1)
        return F.cross_entropy(logits.flatten(0, 1), classes.flatten())

    def decoding_step(self, tokens, state):
        """The beam search's step: the previous level's token -> log-probabilities over the whole token layout,
        the level's head normalised over its 1 + codes classes (the unused class on PAD, -inf elsewhere)."""
        level = state.length  # tokens decoded so far
        previous = tokens - self.vocab.level_start(level - 1) + 1 if level else torch.zeros_like(tokens)
        hidden, state = self.backbone.decode_step_embedded(self.code_embeddings[level](previous), state)
        log_probs = self.code_logits(hidden, level).float().log_softmax(-1)
        start = self.vocab.level_start(level)
        scores = log_probs.new_full((len(tokens), self.vocab.size), float("-inf"))
        scores[:, self.vocab.pad_id] = log_probs[:, 0]
        scores[:, start:start + self.vocab_sizes[level]] = log_probs[:, 1:]
        return scores, state

    # ---- training -------------------------------------------------------------------------------------------
    def in_history(self, users, items):
        """bool: (users, items) pairs [B] of the training split."""
        keys = users * self.n_items + items
        found = torch.searchsorted(self.history_keys, keys).clamp(max=len(self.history_keys) - 1)
        return self.history_keys[found] == keys

    def sample_negatives(self, users, positive):
        """Uniform items outside the user's training history and the positive's leaf cluster (the official
        negative avoids the history and the contrastive positives), redrawn until they are."""
        negative = torch.randint(1, self.n_items, positive.shape, device=positive.device)
        leaf = self.item_codes[positive, :-1]
        for _ in range(NEGATIVE_DRAWS):
            bad = self.in_history(users, negative) | (self.item_codes[negative, :-1] == leaf).all(1)
            if not bad.any():
                return negative
            negative = torch.where(bad, torch.randint_like(negative, 1, self.n_items), negative)
        raise ValueError(f"ColaRec: no negative outside the user's training history after {NEGATIVE_DRAWS} draws: "
                         f"some user has interacted with nearly the whole catalogue ({self.n_items - 1} items).")

    def contrastive_positives(self, positive):
        """Another item of each positive's leaf cluster, uniformly; the positive itself only when it is alone in
        its leaf (the official `cid_neg_dict[iid]['sec']`, the item's cluster mates, and its fallback to the item
        when that set is empty)."""
        size = self.leaf_size[positive]
        draw = (torch.rand(positive.shape, device=positive.device) * (size - 1).clamp(min=1)).long()
        other = self.leaf_order[self.leaf_start[positive] + draw]
        last = self.leaf_order[self.leaf_start[positive] + size - 1]
        other = torch.where(other == positive, last, other)  # the positive's draw goes to the leaf's last item
        return torch.where(size > 1, other, positive)

    def calculate_loss(self, interaction):
        positive = interaction[self.POS_ITEM_ID]
        negative = self.sample_negatives(interaction[self.USER_ID], positive)
        sibling = self.contrastive_positives(positive)
        user_memory, user_mask, user = self.encode_items(self.user_items(interaction), USER_TASK)
        item_memory, item_mask, item = self.encode_items(torch.stack([positive, negative]).view(-1, 1), ITEM_TASK)
        pos_memory, neg_memory = item_memory.chunk(2)
        pos_mask, neg_mask = item_mask.chunk(2)
        pos, neg = item.float().chunk(2)
        # the contrastive positive alone carries user-ID slots: users of its training interactions (the official
        # v7CL2TrainDataset.collate_fn tokenizes only it with ty='item'; the positive and the negative go through
        # the base collate_fn, without them)
        users = self.sample_item_users(sibling) if self.sampled_users > 0 else None
        aug = self.encode_items(sibling.view(-1, 1), ITEM_TASK, users)[2].float()
        generation = (self.gid_loss(user_memory, user_mask, positive) + self.gid_loss(pos_memory, pos_mask, positive)
                      + self.gid_loss(neg_memory, neg_mask, negative))
        user = user.float()
        ranking = -F.logsigmoid((user * pos).sum(1) - (user * neg).sum(1)).mean()
        contrastive = -F.logsigmoid((pos * aug).sum(1) - (pos * neg).sum(1)).mean()
        return self.generation_weight * generation + ranking + self.contrastive_weight * contrastive

    # ---- inference ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_topk(self, interaction, k):
        items = self.user_items(interaction)
        memory, mask, _ = self.encode_items(items, USER_TASK)
        output = beam_search(self.decoding_step, self.backbone.start_decoding(memory, mask), len(items),
                             self.vocab.num_levels, self.vocab, self.beam_size, constraints=self.catalogue, topk=k,
                             state_rows_per_user=1, device=items.device)
        history, _ = self.history(interaction)
        seen = (output.items.unsqueeze(2) == history.unsqueeze(1)).any(2) & (output.items > 0)
        scores = output.scores.masked_fill(seen, float("-inf"))  # the official code drops interacted items
        return top_candidates(output.items, scores, k)
