"""EAGER — Two-Stream Generative Recommender with Behavior-Semantic Collaboration (Ye et al., KDD 2024).

Representation: a behaviour vector per item (the item embeddings of RecBole's SASRec trained on the training split,
96-d; representation/collaborative.py) and a semantic vector (the item's text embedding). Tokenization: one
hierarchical balanced k-means tree per stream (128 branches, leaves unique by construction; tokenization/hkmeans.py)
whose tokens name tree nodes (`tree_path_codes`); both ID sets sit side by side in `item_codes`, behaviour columns
first. Backbone: one transformer encoder over the history's item-ID embeddings, run once, and one decoder per stream
cross-attending to its output (the shared T5-style layers). Training: next-code cross-entropy per stream, summed;
optionally the two auxiliary tasks, both off in the official script: the global contrastive task (`gct_weights`: a
summary token after the code, whose decoder output is projected and compared by cosine / `gct_temperature` with the
target's own behaviour or text vector, against every item) and the semantic-guided transfer task (`stt_weight`:
reconstruct a masked behaviour code token and recognise a corrupted code, guided by the semantic summary).
Inference: the shared constrained beam search in each stream, the union of both candidate lists, every candidate
re-scored by the sum over both streams of its code's log-likelihood; top-K.
Defaults and deviations: properties/model/EAGER.yaml and the README.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_genrec.data.semantic_ids import fit_semantic_ids
from recbole_genrec.inference import (PrefixConstraints, SemanticIdVocab, generate_items, mask_duplicates,
                                      top_candidates)
from recbole_genrec.model.base import GenerativeRecommender
from recbole_genrec.model.layers import EncoderDecoder, cosine_logits
from recbole_genrec.representation import item_cf_embeddings, item_text_embeddings
from recbole_genrec.tokenization import SemanticIds, tree_path_codes

STREAMS = ("behaviour", "semantic")
# The largest node vocabulary of a tree level (128^2 = 16,384 covers amazon-beauty in two levels; a third level of
# 128 branches would need 2.1M output tokens, whose logits alone fill tens of GB at evaluation)
MAX_NODE_VOCABULARY = 2 ** 18


def stream_vectors(config, dataset, train_dataset):
    """Each stream's item vectors [n_items + 1, d]: CF embeddings (training split only) and text embeddings."""
    return {"behaviour": item_cf_embeddings(config, dataset, train_dataset),
            "semantic": item_text_embeddings(config, dataset)}


class EAGER(GenerativeRecommender):
    required_tokenizer = ("HKMeans", "EAGER's decoders name nodes of a k-means tree")

    @classmethod
    def build_semantic_ids(cls, config, dataset, train_dataset):
        fit_mask = cls.tokenizer_fit_mask(config, train_dataset)
        trees = {stream: fit_semantic_ids(config, dataset, vectors, fit_mask=fit_mask, kind=f"sid-{stream}")
                 for stream, vectors in stream_vectors(config, dataset, train_dataset).items()}
        for stream, tree in trees.items():
            branches, levels = tree.vocab_sizes[0], len(tree.vocab_sizes)
            if tree.vocab_sizes != [branches] * levels:
                raise ValueError(f"EAGER's {stream} tree has levels of sizes {tree.vocab_sizes}, not {levels} x "
                                 f"{branches}: use tokenizer_params.collision: none (no collision digit).")
            if branches ** levels > MAX_NODE_VOCABULARY:
                # tokens name tree nodes, so the last level needs branches^levels of them
                needed = math.ceil(math.sqrt(dataset.item_num - 1))
                raise ValueError(f"EAGER: {dataset.item_num - 1} items need {levels} levels of {branches} branches, "
                                 f"whose last level would name {branches ** levels:,} tree nodes. Use two levels: "
                                 f"tokenizer_params.branches >= {needed} (ceil of the square root of the catalogue).")
        semantic_ids = SemanticIds.concat({stream: tree_path_codes(tree, branches=tree.vocab_sizes[0])
                                           for stream, tree in trees.items()})
        semantic_ids.fit_seconds = sum(tree.fit_seconds for tree in trees.values())
        semantic_ids.cache_path = ", ".join(tree.cache_path for tree in trees.values())
        return semantic_ids

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        parts = self.semantic_ids.quality["parts"]
        d_model = int(config["d_model"])
        self.item_embedding = nn.Embedding(self.n_items, d_model, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, std=1.0)  # the scale of the decoders' token embeddings (T5)
        self.vocab, self.decoders, self.catalogues = {}, nn.ModuleDict(), nn.ModuleDict()
        first = 0
        for stream in STREAMS:
            levels = parts[stream]["levels"]
            codes, sizes = self.item_codes[:, first:first + levels], self.vocab_sizes[first:first + levels]
            first += levels
            vocab = SemanticIdVocab(sizes)
            self.vocab[stream] = vocab
            self.register_buffer(f"{stream}_tokens", vocab.item_tokens(codes), persistent=False)  # from item_codes
            self.catalogues[stream] = PrefixConstraints(codes, sizes)
            # the behaviour stream's model also holds the one shared encoder; +1 token: the summary token
            self.decoders[stream] = EncoderDecoder(
                vocab_size=vocab.size + 1, d_model=d_model, num_heads=int(config["num_heads"]),
                d_kv=int(config["d_kv"]), d_ff=int(config["d_ff"]),
                num_encoder_layers=int(config["num_encoder_layers"]) if stream == "behaviour" else 0,
                num_decoder_layers=int(config["num_decoder_layers"]), dropout=float(config["dropout"]),
            )
        self.gct_weights = dict(zip(STREAMS, map(float, config["gct_weights"] or (0.0, 0.0))))
        self.gct_temperature = float(config["gct_temperature"])
        self.stt_weight = float(config["stt_weight"] or 0.0)
        if self.stt_weight:
            # semantic-guided transfer: a 1-layer bidirectional decoder (FFN 192, no dropout, as the official
            # trans_d_rec) reads the behaviour code's token embeddings, one of them masked, with the semantic
            # stream's summary as its memory; its own two tokens are the start and mask vectors
            self.transfer = EncoderDecoder(vocab_size=2, d_model=d_model, num_heads=int(config["num_heads"]),
                                           d_kv=int(config["d_kv"]), d_ff=192, num_encoder_layers=0,
                                           num_decoder_layers=1, dropout=0.0)
            self.guide_projection = nn.Linear(d_model, d_model)
            self.estimation_head = nn.Linear(d_model, 1)
        if any(self.gct_weights.values()):
            # the contrastive targets: each stream's item vectors (cached artefacts, not stored in checkpoints)
            vectors = stream_vectors(config, dataset, dataset)
            self.gct_projection = nn.ModuleDict()
            for stream in STREAMS:
                target = torch.from_numpy(vectors[stream]).float()
                self.register_buffer(f"{stream}_vectors", target, persistent=False)
                self.gct_projection[stream] = nn.Linear(d_model, target.shape[1])

    @property
    def encoder(self):
        return self.decoders["behaviour"]  # holds the one encoder both decoders attend to

    def stream_tokens(self, stream):
        return getattr(self, f"{stream}_tokens")

    def encode(self, interaction):
        """History -> (items [B, T], their mask, memory [B, T, d]); the encoder runs once for both streams."""
        items, _ = self.history(interaction)
        mask = items != 0
        return items, mask, self.encoder.encode_embeddings(self.item_embedding(items), mask)

    # ---- training -------------------------------------------------------------------------------------------
    def calculate_loss(self, interaction):
        _, mask, memory = self.encode(interaction)
        target_items = interaction[self.POS_ITEM_ID]
        loss, summaries = 0.0, {}
        for stream in STREAMS:
            decoder, vocab = self.decoders[stream], self.vocab[stream]
            target = self.stream_tokens(stream)[target_items]  # [B, L]
            start = torch.full_like(target[:, :1], vocab.pad_id)
            gct = self.gct_weights[stream] > 0
            summary = gct or (stream == "semantic" and self.stt_weight > 0)
            # [start, t_1 .. t_L-1] predicts the code; [.., t_L, summary token] also gives the summary token's
            # output at the end (one decoder pass for both), read by the contrastive and transfer tasks
            inputs = [start, target[:, :-1]] + ([target[:, -1:], torch.full_like(start, vocab.size)] if summary else [])
            hidden = decoder.decode(torch.cat(inputs, dim=1), memory, mask)
            logits = decoder.lm_logits(hidden[:, :target.shape[1]]).float()
            loss = loss + F.cross_entropy(logits.flatten(0, 1), target.flatten())
            summaries[stream] = hidden[:, -1]
            if gct:
                vectors = getattr(self, f"{stream}_vectors")
                scores = cosine_logits(self.gct_projection[stream](hidden[:, -1]), vectors, self.gct_temperature)
                scores[:, 0] = float("-inf")  # the padding item
                loss = loss + self.gct_weights[stream] * F.cross_entropy(scores, target_items)
        if self.stt_weight:
            loss = loss + self.stt_weight * self.transfer_loss(target_items, summaries["semantic"])
        return loss

    def transfer_loss(self, target_items, semantic_summary):
        """Semantic-guided transfer on the behaviour code: reconstruct one masked code token (InfoNCE, temperature
        1, over the token and its siblings, whose embeddings are detached) and tell the true code from one with a
        random sibling at a random level (binary CE on the start position), both guided by the semantic stream's
        summary (detached)."""
        tokens = self.stream_tokens("behaviour")[target_items]  # [B, L]
        slots = self.item_codes[target_items, :tokens.shape[1]]  # path codes: parent * k + slot
        users, levels = tokens.shape
        branches, rows = self.vocab_sizes[0], torch.arange(users, device=tokens.device)
        embedding, own = self.decoders["behaviour"].embedding, self.transfer.embedding.weight  # own: start, mask
        level_starts = torch.tensor([self.vocab["behaviour"].level_start(l) for l in range(levels)],
                                    device=tokens.device)
        parents = torch.cat([torch.zeros_like(slots[:, :1]), slots[:, :-1]], dim=1)  # [B, L]
        siblings = level_starts + parents * branches  # first token of each level's sibling group

        masked_level = torch.randint(levels, (users,), device=tokens.device)
        wrong_level = torch.randint(levels, (users,), device=tokens.device)
        wrong = tokens.clone()
        true_slot = tokens[rows, wrong_level] - siblings[rows, wrong_level]
        shift = torch.randint(1, branches, (users,), device=tokens.device)
        other_slot = (true_slot + shift) % branches  # never the true one
        wrong[rows, wrong_level] = siblings[rows, wrong_level] + other_slot
        inputs = embedding(torch.cat([tokens, tokens, wrong]))  # masked, true, corrupted: one pass
        is_masked = torch.arange(levels, device=tokens.device) == masked_level.unsqueeze(1)
        inputs[:users] = torch.where(is_masked.unsqueeze(-1), own[1].to(inputs.dtype), inputs[:users])
        inputs = torch.cat([own[0].to(inputs.dtype).expand(len(inputs), 1, -1), inputs], dim=1)
        guide = self.guide_projection(semantic_summary.detach()).unsqueeze(1).repeat(3, 1, 1)  # memory [3B, 1, d]
        hidden = self.transfer.decode_embeddings(inputs, guide, causal=False)

        masked = hidden[rows, masked_level + 1]  # [B, d]
        group = siblings[rows, masked_level].unsqueeze(1) + torch.arange(branches, device=tokens.device)
        logits = torch.einsum("bd,bkd->bk", masked.float(), embedding(group).detach().float())
        reconstruction = F.cross_entropy(logits, (tokens[rows, masked_level] - group[:, 0]))
        verdict = self.estimation_head(hidden[users:, 0]).squeeze(-1).float()
        truth = torch.cat([torch.ones(users, device=tokens.device), torch.zeros(users, device=tokens.device)])
        return reconstruction + F.binary_cross_entropy_with_logits(verdict, truth)

    # ---- inference ------------------------------------------------------------------------------------------
    def generate_topk(self, interaction, k):
        items, mask, memory = self.encode(interaction)
        candidates = torch.cat([
            generate_items(self.decoders[stream], items, mask, vocab=self.vocab[stream], beam_size=self.beam_size,
                           topk=k, constraints=self.catalogues[stream], memory=memory).items
            for stream in STREAMS], dim=1)  # [B, 2 * beam], -1 = no item
        scores = sum(self.code_log_likelihood(stream, memory, mask, candidates) for stream in STREAMS)
        scores = mask_duplicates(candidates, scores.masked_fill(candidates < 0, float("-inf")))
        return top_candidates(candidates, scores, k)

    @torch.no_grad()
    def code_log_likelihood(self, stream, memory, mask, candidates):
        """log p(candidate's code in `stream` | history) [B, C], normalised as in the beam search; the decoder's
        key/value cache holds each user's memory once for all its candidates."""
        decoder = self.decoders[stream]
        users, per_user = candidates.shape
        codes = self.stream_tokens(stream)[candidates.clamp(min=0)].flatten(0, 1)  # [B * C, L]
        state = decoder.start_decoding(memory, mask)
        state = state.index_select(torch.arange(users, device=memory.device).repeat_interleave(per_user))
        token = torch.full_like(codes[:, 0], self.vocab[stream].pad_id)
        total = torch.zeros(codes.shape[0], device=memory.device)
        for level in range(codes.shape[1]):
            logits, state = decoder.decode_step(token, state)
            token = codes[:, level]
            # the beam search's normalisation, without materialising a log-softmax over the node vocabulary
            total += logits.gather(1, token.unsqueeze(1)).squeeze(1).float() - logits.float().logsumexp(-1)
        return total.view(users, per_user)
