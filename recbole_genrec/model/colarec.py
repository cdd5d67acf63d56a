"""ColaRec — Content-Based Collaborative Generation for Recommender Systems (Wang et al., CIKM 2024).

Representation: collaborative item embeddings of RecBole's LightGCN trained on the training split (the item IDs'
source, "GIDs") and the items' text (their content). Tokenization: hierarchical balanced k-means, 32 branches per
level (3 levels up to 32,768 items), the last level the item's index inside its leaf cluster (tokenization/hkmeans.py),
so GIDs are unique by construction. Backbone: a T5-style encoder-decoder; the encoder reads a task token, then per
item an item-ID embedding, its content (the projected text embedding, one soft token) and a separator; the encoder
state at the last separator is the sequence's representation. Training, as the official code: user -> GID generation
(10 history items sampled in random order) and item -> GID indexing for the positive and a negative item (weight
0.08 together), a BPR term between the user's and the two items' representations (weight 1), and a BPR-style
contrastive term pulling the positive item towards an item of its leaf cluster (weight 0.1). Inference: the shared
constrained beam search (beam 100) on the 20 most recent items, most recent first; items of the history dropped.
Defaults: properties/model/ColaRec.yaml; deviations in the README.
"""
import torch
import torch.nn.functional as F
from torch import nn

from recbole_genrec.data.semantic_ids import fit_semantic_ids
from recbole_genrec.inference import PrefixConstraints, SemanticIdVocab, generate_items, top_candidates
from recbole_genrec.model.base import GenerativeRecommender
from recbole_genrec.model.layers import EncoderDecoder
from recbole_genrec.representation import item_cf_embeddings, item_text_embeddings

USER_TASK, ITEM_TASK, SEPARATOR = 0, 1, 2  # extra tokens after the GID vocabulary


class ColaRec(GenerativeRecommender):
    required_tokenizer = ("HKMeans", "ColaRec's GIDs come from a k-means tree")

    @classmethod
    def build_semantic_ids(cls, config, dataset, train_dataset):
        return fit_semantic_ids(config, dataset, item_cf_embeddings(config, dataset, train_dataset),
                                fit_mask=cls.tokenizer_fit_mask(config, train_dataset))

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d_model = int(config["d_model"])
        self.vocab = SemanticIdVocab(self.vocab_sizes)
        self.register_buffer("item_tokens", self.vocab.item_tokens(self.item_codes), persistent=False)
        self.catalogue = PrefixConstraints(self.item_codes, self.vocab_sizes)
        self.backbone = EncoderDecoder(
            vocab_size=self.vocab.size + 3, d_model=d_model, num_heads=int(config["num_heads"]),
            d_kv=int(config["d_kv"]), d_ff=int(config["d_ff"]), num_encoder_layers=int(config["num_encoder_layers"]),
            num_decoder_layers=int(config["num_decoder_layers"]), dropout=float(config["dropout"]),
        )
        self.item_id_embedding = nn.Embedding(self.n_items, d_model, padding_idx=0)
        nn.init.normal_(self.item_id_embedding.weight, std=1.0)  # the scale of the backbone's token embeddings
        text = torch.from_numpy(item_text_embeddings(config, dataset)).float()
        self.register_buffer("item_text", text, persistent=False)  # content: a cached artefact, not a weight
        self.content_projection = nn.Linear(text.shape[1], d_model)
        self.sampled_items = int(config["sample_item_num"])
        self.generation_weight = float(config["generation_weight"])
        self.contrastive_weight = float(config["contrastive_weight"])
        self._leaf_groups(self.item_codes)

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

    # ---- encoder inputs ---------------------------------------------------------------------------------------
    def encode_items(self, items, task):
        """items long [B, M] (0 = none, real items first) -> (memory [B, 1 + 3M, d], mask, representation [B, d]):
        [task] + per item [item-ID embedding, projected content, separator]; the representation is the encoder
        state at the last separator."""
        users, per_row = items.shape
        d_model = self.item_id_embedding.embedding_dim
        token_embedding = self.backbone.embedding
        ids, content = self.item_id_embedding(items), self.content_projection(self.item_text[items])
        separator = token_embedding.weight[self.vocab.size + SEPARATOR].expand(users, per_row, d_model)
        slots = torch.stack([ids, content.to(ids.dtype), separator.to(ids.dtype)], dim=2).view(users, 3 * per_row, -1)
        task_token = token_embedding.weight[self.vocab.size + task].to(ids.dtype).expand(users, 1, d_model)
        hidden = torch.cat([task_token, slots], dim=1)
        real = (items != 0).repeat_interleave(3, dim=1)
        mask = torch.cat([torch.ones_like(real[:, :1]), real], dim=1)
        memory = self.backbone.encode_embeddings(hidden, mask)
        last = 3 * (items != 0).sum(1)  # the last separator (the task token for an empty row)
        return memory, mask, memory[torch.arange(users, device=items.device), last]

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

    # ---- training -------------------------------------------------------------------------------------------
    def gid_loss(self, memory, mask, items):
        """Next-GID cross-entropy of `items`' codes, decoded from `memory` (teacher forcing)."""
        target = self.item_tokens[items]
        logits = self.backbone.teacher_forced_logits(target, memory, mask).float()
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    def calculate_loss(self, interaction):
        positive = interaction[self.POS_ITEM_ID]
        negative = torch.randint(1, self.n_items, positive.shape, device=positive.device)
        draw = (torch.rand(positive.shape, device=positive.device) * self.leaf_size[positive]).long()
        sibling = self.leaf_order[self.leaf_start[positive] + draw]  # an item of the positive's leaf cluster
        user_memory, user_mask, user = self.encode_items(self.user_items(interaction), USER_TASK)
        item_memory, item_mask, item = self.encode_items(torch.stack([positive, negative, sibling]).view(-1, 1),
                                                         ITEM_TASK)
        pos_memory, neg_memory, _ = item_memory.chunk(3)
        pos_mask, neg_mask, _ = item_mask.chunk(3)
        pos, neg, aug = item.float().chunk(3)
        generation = (self.gid_loss(user_memory, user_mask, positive) + self.gid_loss(pos_memory, pos_mask, positive)
                      + self.gid_loss(neg_memory, neg_mask, negative))
        user = user.float()
        ranking = -F.logsigmoid((user * pos).sum(1) - (user * neg).sum(1)).mean()
        contrastive = -F.logsigmoid((pos * aug).sum(1) - (pos * neg).sum(1)).mean()
        return self.generation_weight * generation + ranking + self.contrastive_weight * contrastive

    # ---- inference ------------------------------------------------------------------------------------------
    def generate_topk(self, interaction, k):
        items = self.user_items(interaction)
        memory, mask, _ = self.encode_items(items, USER_TASK)
        output = generate_items(self.backbone, items, mask, vocab=self.vocab, beam_size=self.beam_size, topk=k,
                                constraints=self.catalogue, memory=memory)
        history, _ = self.history(interaction)
        seen = (output.items.unsqueeze(2) == history.unsqueeze(1)).any(2) & (output.items > 0)
        scores = output.scores.masked_fill(seen, float("-inf"))  # the official code drops interacted items
        return top_candidates(output.items, scores, k)
