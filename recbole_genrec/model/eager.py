"""EAGER — Two-Stream Generative Recommender with Behavior-Semantic Collaboration (Ye et al., KDD 2024).

Representation: a behaviour vector per item (the item embeddings of RecBole's SASRec trained on the training split,
96-d; representation/collaborative.py) and a semantic vector (the item's text embedding). Tokenization: one
hierarchical balanced k-means tree per stream (128 branches, leaves unique by construction; tokenization/hkmeans.py)
whose tokens name tree nodes (`tree_path_codes`); both ID sets sit side by side in `item_codes`, behaviour columns
first. Backbone: one transformer encoder shared by both streams, run once per stream over that stream's own item-ID
embedding rows (the official semantic stream shifts the item ids into a second half of the shared encoder's
embedding table: `emb_x += item_num + 1` for type 1 in yewzz/EAGER lib/HF_Model.py and lib/Trm4Rec_trainer.py,
train_rec.py sharing `trm.encoder`), and one decoder per stream cross-attending to its stream's encoder output. The
layers are the official network's (HF_Model.py: an EncoderDecoderModel of two BertConfigs): the shared
EncoderDecoder's BERT style (`backbone: bert`: learned absolute positions, post-LayerNorm blocks, GELU, biases, every
weight at std 0.02, the item-ID rows too), over the history right-aligned as the official input (the latest item
always at the last position). Output: tree-structured softmaxes as HF_Model.py's `logits1`/`logits2`: the first
token over the first level's nodes, every later token over the children of the node before it
(`dec_emb_l2[y[:, 0]]`), scored by the decoder's tied token embeddings (`final_hidden @ dec_emb.T`, unscaled).
Training: that cross-entropy per stream (mean over levels), summed over the streams, plus the two auxiliary tasks
(on by default, as in the paper; the released script turns them off): the global contrastive task (`gct_weights`: a
summary token after the code, whose decoder output is projected and compared by cosine / `gct_temperature` with the
target's own behaviour or text vector, against every item) and the semantic-guided transfer task (`stt_weight`:
reconstruct a masked behaviour code token and recognise a corrupted code, guided by the semantic summary).
Inference: a constrained beam search in each stream with the same tree-structured normalisation (`beam_size` = 100
of the 128 first-level nodes, then the best 100 leaves), each stream's top-K, their union re-scored by the sum over
both streams of the code's log-likelihood (train_rec.py `rerank`); top-K. The beam search scores only each beam's
node choices (its `branches` children) and ranks [users, beams x branches] candidates, checked by searchsorted in
the sorted keys of the tree's nodes: nothing of a level's whole node vocabulary (branches^level) per beam.
Defaults and deviations: properties/model/EAGER.yaml and the README.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from recbole_genrec.data.semantic_ids import fit_semantic_ids
from recbole_genrec.inference import (BeamSearchOutput, PrefixConstraints, SemanticIdVocab, check_beam_size,
                                      mask_duplicates, top_candidates)
from recbole_genrec.model.base import GenerativeRecommender
from recbole_genrec.model.layers import EncoderDecoder, cosine_logits
from recbole_genrec.representation import item_cf_embeddings, item_text_embeddings
from recbole_genrec.tokenization import SemanticIds, tree_path_codes

STREAMS = ("behaviour", "semantic")
# The largest node vocabulary of a tree level (128^2 = 16,384 covers amazon-beauty in two levels; a third level of
# 128 branches would need 2.1M tokens, each a row of both decoders' token embeddings)
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
        style = config["backbone"]  # "bert": the official network (HF_Model.py's BertConfigs)
        # BERT's position tables: the history, or a decoder input (start, the code, the summary token)
        max_positions = max([self.max_seq_length] + [parts[s]["levels"] + 2 for s in STREAMS]) \
            if style == "bert" else None
        self.vocab, self.decoders, self.catalogues = {}, nn.ModuleDict(), nn.ModuleDict()
        first = 0
        for stream in STREAMS:
            levels = parts[stream]["levels"]
            codes, sizes = self.item_codes[:, first:first + levels], self.vocab_sizes[first:first + levels]
            first += levels
            vocab = SemanticIdVocab(sizes)
            self.vocab[stream] = vocab
            self.register_buffer(f"{stream}_tokens", vocab.item_tokens(codes), persistent=False)  # from item_codes
            # the sorted keys of the tree's nodes (no [parents, level tokens] tables: a level names branches^l nodes)
            self.catalogues[stream] = PrefixConstraints(codes, sizes, next_code_tables=False)
            # the behaviour stream's model also holds the one shared encoder; +1 token: the summary token
            self.decoders[stream] = EncoderDecoder(
                vocab_size=vocab.size + 1, d_model=d_model, num_heads=int(config["num_heads"]),
                d_kv=int(config["d_kv"]), d_ff=int(config["d_ff"]),
                num_encoder_layers=int(config["num_encoder_layers"]) if stream == "behaviour" else 0,
                num_decoder_layers=int(config["num_decoder_layers"]), dropout=float(config["dropout"]),
                style=style, max_positions=max_positions,
            )
        # each stream's own item-ID rows in front of the one shared encoder (official: the semantic stream's ids
        # shifted by item_num + 1 in one table of 2 x items rows, HF_Model.py / Trm4Rec_trainer.py, type == 1), at
        # the decoders' token scale
        self.item_embeddings = nn.ModuleDict()
        for stream in STREAMS:
            self.item_embeddings[stream] = nn.Embedding(self.n_items, d_model, padding_idx=0)
            nn.init.normal_(self.item_embeddings[stream].weight, std=self.encoder.embedding_init_std)
            with torch.no_grad():
                self.item_embeddings[stream].weight[0].zero_()
        self.gct_weights = dict(zip(STREAMS, map(float, config["gct_weights"] or (0.0, 0.0))))
        self.gct_temperature = float(config["gct_temperature"])
        self.stt_weight = float(config["stt_weight"] or 0.0)
        if self.stt_weight:
            # semantic-guided transfer: a 1-layer bidirectional decoder (FFN 192, no dropout, as the official
            # trans_d_rec) reads the behaviour code's token embeddings, one of them masked, with the semantic
            # stream's summary as its memory; its own two tokens are the start and mask vectors. Blocks of the
            # backbone's style, so its own vectors start at the scale of the code embeddings it reads
            self.transfer = EncoderDecoder(vocab_size=2, d_model=d_model, num_heads=int(config["num_heads"]),
                                           d_kv=int(config["d_kv"]), d_ff=192, num_encoder_layers=0,
                                           num_decoder_layers=1, dropout=0.0, style=style,
                                           max_positions=max_positions)
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
        """History -> (items [B, T], their mask, {stream: memory [B, T, d]}): the shared encoder once per stream,
        over that stream's own item-ID embeddings. The history is right-aligned as the official input (padding in
        front, the latest item at the last position: generate_train_and_test_data.py), so that with BERT's absolute
        positions a position means the same recency for every user."""
        items, lengths = self.history(interaction)  # left-aligned
        positions = torch.arange(items.shape[1], device=items.device)
        source = positions - (items.shape[1] - lengths).unsqueeze(1)  # the left-aligned index of each slot
        items = torch.where(source >= 0, items.gather(1, source.clamp(min=0)), 0)
        mask = items != 0
        return items, mask, {stream: self.encoder.encode_embeddings(self.item_embeddings[stream](items), mask)
                             for stream in STREAMS}

    # ---- the tree-structured output ---------------------------------------------------------------------------
    def node_choices(self, stream, previous, level):
        """The tokens a decoder chooses among at `level` (an int, or a LongTensor broadcastable with `previous`)
        after the input token `previous` [...]: the first level's nodes after the start token, then the children
        of the previous level's node (HF_Model.py: `dec_emb_l1 = dec_emb[:end_idx]`, `dec_emb_l2 =
        dec_emb[end_idx:].view(end_idx, end_idx, -1)[y[:, 0]]`) -> tokens [..., branches]."""
        vocab = self.vocab[stream]
        branches = vocab.vocab_sizes[0]
        starts = torch.tensor([vocab.level_start(l) for l in range(vocab.num_levels)], device=previous.device)
        level = torch.as_tensor(level, device=previous.device)
        # a node's path code (tree_path_codes) times the branching gives its first child's path code
        parent = torch.where(level > 0, previous - starts[(level - 1).clamp(min=0)], 0)
        return (starts[level] + parent * branches).unsqueeze(-1) + torch.arange(branches, device=previous.device)

    def node_logits(self, stream, hidden, choices):
        """Logits [..., branches] of the tokens `choices` [..., branches] from decoder states `hidden` [..., d]:
        the decoder's tied output projection (`lm_logits`) restricted to those rows."""
        decoder = self.decoders[stream]
        weights = decoder.embedding(choices)  # [..., branches, d]
        return (weights @ (hidden * decoder.output_scale).unsqueeze(-1)).squeeze(-1)

    def decoding_step(self, stream):
        """The beam search's step for one stream: `(tokens [R], state) -> (log_probs [R, branches], choices [R,
        branches], state)`, the decoder's incremental step scored on the step's node choices only (first-level
        nodes, then the children of the beam's last node; Trm4Rec_trainer.predict's `cls_emb`), log-probabilities
        normalised over them. Only those rows of the output projection are computed (128 of 16k tokens at the
        paper's size) and nothing of the rest of the vocabulary is materialised."""
        decoder = self.decoders[stream]

        def step(tokens, state):
            choices = self.node_choices(stream, tokens, state.length)  # state.length = tokens decoded so far
            hidden, state = decoder.decode_step_hidden(tokens, state)
            return self.node_logits(stream, hidden, choices).float().log_softmax(-1), choices, state

        return step

    # ---- training -------------------------------------------------------------------------------------------
    def calculate_loss(self, interaction):
        _, mask, memories = self.encode(interaction)
        target_items = interaction[self.POS_ITEM_ID]
        loss, summaries = 0.0, {}
        for stream in STREAMS:
            decoder, vocab = self.decoders[stream], self.vocab[stream]
            target = self.stream_tokens(stream)[target_items]  # [B, L]
            levels = target.shape[1]
            start = torch.full_like(target[:, :1], vocab.pad_id)
            gct = self.gct_weights[stream] > 0
            summary = gct or (stream == "semantic" and self.stt_weight > 0)
            # [start, t_1 .. t_L-1] predicts the code; [.., t_L, summary token] also gives the summary token's
            # output at the end (one decoder pass for both), read by the contrastive and transfer tasks
            previous = torch.cat([start, target[:, :-1]], dim=1)
            inputs = [previous] + ([target[:, -1:], torch.full_like(start, vocab.size)] if summary else [])
            hidden = decoder.decode(torch.cat(inputs, dim=1), memories[stream], mask)
            # each level's cross-entropy over its node choices: the first level's nodes, then the parent's
            # children (HF_Model.py loss1, loss2, averaged)
            choices = self.node_choices(stream, previous, torch.arange(levels, device=target.device))
            logits = self.node_logits(stream, hidden[:, :levels], choices).float()  # [B, L, branches]
            loss = loss + F.cross_entropy(logits.flatten(0, 1), (target - choices[..., 0]).flatten())
            summaries[stream] = hidden[:, -1]
            if gct:
                loss = loss + self.gct_weights[stream] * self.contrastive_loss(stream, hidden[:, -1], target_items)
        if self.stt_weight:
            loss = loss + self.stt_weight * self.transfer_loss(target_items, summaries["semantic"])
        return loss

    def contrastive_loss(self, stream, summary, target_items):
        """The global contrastive task as HF_Model.py's `info_nce` call: the summary state L2-normalised, projected,
        compared by cosine / `gct_temperature` with the target's vector (the first logit) and with every item's
        (the official 2,048 sampled items are the whole catalogue up to that size, the target among them), so the
        positive counts twice in the normaliser as there."""
        vectors = getattr(self, f"{stream}_vectors")
        scores = cosine_logits(self.gct_projection[stream](F.normalize(summary, dim=-1)), vectors,
                               self.gct_temperature)
        scores[:, 0] = float("-inf")  # the padding item
        logits = torch.cat([scores.gather(1, target_items.unsqueeze(1)), scores], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(target_items))

    def transfer_loss(self, target_items, semantic_summary):
        """Semantic-guided transfer on the behaviour code: reconstruct one masked code token (InfoNCE, temperature
        1, over the token and its siblings, whose embeddings are detached) and tell the true code from one with a
        random sibling at a random level (binary CE on the start position), both guided by the semantic stream's
        summary (detached). As HF_Model.py's content-guided reconstruction and estimation, except: the masked and
        the corrupted level are drawn per user (official: one per batch), the corruption is a sibling other than
        the true node (official: any node of the level), and the guide is the summary's decoder state (official:
        the contrastive projection of the normalised summary)."""
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
        _, mask, memories = self.encode(interaction)
        candidates = torch.cat([self.stream_beam(stream, memories[stream], mask, k).items[:, :k]
                                for stream in STREAMS], dim=1)  # [B, 2k]: each stream's top k (-1 = no item)
        scores = sum(self.code_log_likelihood(stream, memories[stream], mask, candidates) for stream in STREAMS)
        scores = mask_duplicates(candidates, scores.masked_fill(candidates < 0, float("-inf")))
        return top_candidates(candidates, scores, k)

    @torch.no_grad()
    def stream_beam(self, stream, memory, mask, k):
        """One stream's constrained beam search with the tree-structured normalisation: `beam_size` beams at
        every level (100 of the 128 first-level nodes, then the best 100 leaves, as Trm4Rec_trainer.predict with
        num_beams=100) -> BeamSearchOutput, beams best first (-1 / -inf after the last item when fewer items than
        beams can be reached).

        The shared `beam_search`'s ranking, restricted to what can win: a beam's only finite candidates are its
        node's children, so each level ranks [users, beams x branches] candidates (`decoding_step`'s choices)
        instead of beams x the level's whole node vocabulary, and a child is kept when some item's code starts
        with the beam's path to it (one searchsorted in the catalogue's sorted prefix keys). The scores are the
        children's log-softmax as they are; the shared search would subtract a second normalisation over the
        whole vocabulary row, 0 up to float rounding (it can order two beams 1 ulp apart the other way)."""
        check_beam_size(self.beam_size, k)
        decoder, vocab, catalogue = self.decoders[stream], self.vocab[stream], self.catalogues[stream]
        step, users, beam, device = self.decoding_step(stream), len(memory), self.beam_size, memory.device
        state = decoder.start_decoding(memory, mask)  # one row per user; expanded to the beams after level 0
        scores = torch.zeros(users, 1, device=device)  # [users, beams]: one live beam, the start token
        keys = torch.zeros(users, 1, dtype=torch.long, device=device)  # each beam's code so far, as a prefix key
        codes = torch.zeros(users, 1, 0, dtype=torch.long, device=device)
        tokens = torch.full((users,), vocab.pad_id, dtype=torch.long, device=device)
        for level in range(vocab.num_levels):
            log_probs, choices, state = step(tokens, state)  # [users * beams, branches]
            rows, branches = scores.shape[1], choices.shape[1]
            child_codes = (choices - vocab.level_start(level)).view(users, rows, branches)
            child_keys = catalogue.extend_key(keys.unsqueeze(-1), level, child_codes)
            log_probs = log_probs.view(users, rows, branches).masked_fill(
                ~catalogue.has_prefix(level + 1, child_keys), float("-inf"))
            candidates = (scores.unsqueeze(-1) + log_probs).view(users, rows * branches)
            kept = min(beam, rows * branches)
            scores, flat = candidates.topk(kept, dim=1)
            if kept < beam:  # fewer first-level nodes than beams: pad with dead beams
                scores = torch.cat([scores, scores.new_full((users, beam - kept), float("-inf"))], dim=1)
                flat = torch.cat([flat, flat.new_zeros(users, beam - kept)], dim=1)
            parent = flat // branches
            code, keys = child_codes.view(users, -1).gather(1, flat), child_keys.view(users, -1).gather(1, flat)
            codes = torch.cat([codes.gather(1, parent.unsqueeze(-1).expand(-1, -1, level)), code.unsqueeze(-1)],
                              dim=-1)
            if level + 1 < vocab.num_levels:
                rows_kept = torch.arange(users, device=device).unsqueeze(1) * rows + parent
                state = state.index_select(rows_kept.view(-1))
                tokens = (code + vocab.level_start(level)).view(-1)
        # every finite beam is an item (constrained); topk left them sorted, the dead ones (-inf) last
        generated = torch.isfinite(scores)
        items = torch.where(generated, catalogue.lookup_keys(keys), torch.full_like(keys, -1))
        return BeamSearchOutput(items=items, codes=codes.masked_fill(~generated.unsqueeze(-1), -1), scores=scores,
                                invalid_rate=0.0)

    @torch.no_grad()
    def code_log_likelihood(self, stream, memory, mask, candidates):
        """log p(candidate's code in `stream` | history) [B, C], normalised as in the beam search and in training
        (over each level's node choices; Trm4Rec_trainer.compute_scores); the decoder's key/value cache holds each
        user's memory once for all its candidates. A missing candidate (-1) is scored as item 1."""
        decoder = self.decoders[stream]
        users, per_user = candidates.shape
        codes = self.stream_tokens(stream)[candidates.clamp(min=1)].flatten(0, 1)  # [B * C, L]
        state = decoder.start_decoding(memory, mask)
        state = state.index_select(torch.arange(users, device=memory.device).repeat_interleave(per_user))
        token = torch.full_like(codes[:, 0], self.vocab[stream].pad_id)
        total = torch.zeros(codes.shape[0], device=memory.device)
        for level in range(codes.shape[1]):
            choices = self.node_choices(stream, token, level)
            hidden, state = decoder.decode_step_hidden(token, state)
            logits = self.node_logits(stream, hidden, choices).float()  # [B * C, branches]
            token = codes[:, level]
            total += logits.gather(1, token.unsqueeze(1) - choices[:, :1]).squeeze(1) - logits.logsumexp(-1)
        return total.view(users, per_user)
