"""Encoder-decoder generative recommender over semantic-ID tokens (TIGER's backbone and training objective).

TIGER uses it as is; LETTER changes the tokenizer and the CE temperature; LIGER adds a dense head; MQL4GRec adds
a second code modality. The parts: the history's semantic IDs are flattened into encoder tokens, the decoder
predicts the next item's ID token by token (next-SID cross-entropy), and the shared beam search decodes top-K IDs
under prefix constraints and maps them back to items.
"""
import torch
import torch.nn.functional as F

from recbole_genrec.inference import PrefixConstraints, SemanticIdVocab, generate_items
from recbole_genrec.model.base import GenerativeRecommender
from recbole_genrec.model.layers import EncoderDecoder


class SemanticIdSeq2Seq(GenerativeRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.vocab = SemanticIdVocab(self.vocab_sizes)
        # Optional user token (TIGER hashes user ids into 2000 buckets; its ablation finds it unimportant).
        self.user_buckets = int(config["user_token_buckets"] or 0)
        self.backbone = EncoderDecoder(
            vocab_size=self.vocab.size + self.user_buckets,
            d_model=config["d_model"],
            num_heads=config["num_heads"],
            d_kv=config["d_kv"],
            d_ff=config["d_ff"],
            num_encoder_layers=config["num_encoder_layers"],
            num_decoder_layers=config["num_decoder_layers"],
            dropout=config["dropout"],
            tie_embeddings=config["tie_embeddings"] is not False,
            start_init_std=config["decoder_start_init_std"],
        )
        # `sid_softmax: level`: one softmax per level over its own codes (what per-level output heads compute), in
        # training and in the beam's scores; `vocabulary` (T5's): one softmax over every token.
        self.level_softmax = (config["sid_softmax"] or "vocabulary") == "level"
        level_of_token = torch.full((self.backbone.vocab_size,), -1, dtype=torch.long)
        for level in range(self.vocab.num_levels):
            level_of_token[list(self.vocab.level_range(level))] = level
        self.register_buffer("level_mask", level_of_token[None, :] == torch.arange(self.vocab.num_levels)[:, None],
                             persistent=False)  # bool [L, V]: the tokens of each level
        self.register_buffer("item_tokens", self.vocab.item_tokens(self.item_codes))  # token id of every item's codes
        self.ce_temperature = float(config["ce_temperature"] or 1.0)
        # Code -> item table; with `constrained_beam` it also restricts every decoding step to valid prefixes.
        self.catalogue = PrefixConstraints(self.item_codes, self.vocab_sizes)
        self.constrained = bool(config["constrained_beam"])
        self.last_invalid_rate = 0.0

    def encoder_inputs(self, interaction):
        """History -> encoder tokens [B, T * L (+1)] and mask. Reads only the history (and user id)."""
        items, _ = self.history(interaction)
        tokens = self.item_tokens[items].flatten(1)
        if self.user_buckets:
            user = interaction[self.USER_ID] % self.user_buckets + self.vocab.size
            tokens = torch.cat([user.unsqueeze(1), tokens], dim=1)
        return tokens, tokens != self.vocab.pad_id

    def target_tokens(self, interaction):
        return self.item_tokens[interaction[self.POS_ITEM_ID]]

    def encode(self, interaction):
        """History -> (encoder tokens [B, S], their mask [B, S], encoder output [B, S, d])."""
        input_ids, mask = self.encoder_inputs(interaction)
        return input_ids, mask, self.backbone.encode(input_ids, mask)

    def sequence_logits(self, interaction, target, encoded=None):
        """Teacher-forced logits [B, L, V] for `target` tokens [B, L]; `encoded` = self.encode(interaction)."""
        _, mask, memory = self.encode(interaction) if encoded is None else encoded
        return self.backbone.teacher_forced_logits(target, memory, mask)

    def calculate_loss(self, interaction):
        return self.next_sid_loss(interaction, self.encode(interaction))

    def next_sid_loss(self, interaction, encoded):
        """Next-SID cross-entropy; logits divided by `ce_temperature` (LETTER's ranking-guided loss when < 1)."""
        target = self.target_tokens(interaction)
        logits = self.sequence_logits(interaction, target, encoded).float() / self.ce_temperature  # fp32 under bf16
        if self.level_softmax:
            logits = logits.masked_fill(~self.level_mask[: logits.shape[1]], float("-inf"))
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    def generate_topk(self, interaction, k):
        output = self.beam_search(self.encode(interaction), k)
        return output.items[:, :k], output.scores[:, :k]

    def beam_search(self, encoded, k):
        """The shared batched beam search over the encoder output `encoded` (= self.encode(...)): `beam_size`
        beams per user, prefix-constrained unless `constrained_beam: False`."""
        input_ids, mask, memory = encoded
        output = generate_items(
            self.backbone, input_ids, mask, vocab=self.vocab, beam_size=self.beam_size, topk=k,
            constraints=self.catalogue if self.constrained else None, catalogue=self.catalogue, memory=memory,
            level_softmax=self.level_softmax,
        )
        self.last_invalid_rate = output.invalid_rate
        return output
