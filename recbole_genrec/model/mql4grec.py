"""MQL4GRec — Multimodal Quantitative Language for Generative Recommendation (Zhai et al., ICLR 2025), fine-tuning.

Representation and tokenization: every item has a text code and an image code (4 levels x 256 each), the
"quantitative languages" of its two modalities; here they are the codes the authors published for the dataset
(`<dataset>.text-codes.json`, `.image-codes.json`; tokenization/published.py), used as published. Both sit side by
side in `item_codes` (text columns first) and in one token vocabulary: text codes, then image codes, then the soft
prompt tokens of the tasks that have one. Backbone: TIGER's T5-style encoder-decoder (4 + 4 layers, d_model 128).
Training, the five fine-tuning tasks of the official code, mixed as its concatenated datasets are (each sample
counts once):
  seqrec        history as text codes -> next item's text code
  seqimage      history as image codes -> next item's image code
  fusionseqrec  prompt + history in one modality -> next item's code in the other (50/50 per sample)
  item2image    prompt + an item's text code -> its image code (one sample per catalogue item per epoch)
  image2item    prompt + an item's image code -> its text code
Inference: the shared constrained beam search twice (seqrec and seqimage inputs, beam 20), each list mapped to
items; an item in both lists scores (s_text + s_image) / 2 + 1, any other its one score, s = the code's mean token
log-probability; top-K. Defaults: properties/model/MQL4GRec.yaml; deviations in the README.
"""
import math

import torch
import torch.nn.functional as F

from recbole_genrec.inference import PrefixConstraints, SemanticIdVocab, generate_items, mask_duplicates, top_candidates
from recbole_genrec.model.base import GenerativeRecommender
from recbole_genrec.model.layers import EncoderDecoder
from recbole_genrec.tokenization import SemanticIds
from recbole_genrec.tokenization.published import load_published_codes, published_codes_path

MODALITIES = ("text", "image")
PROMPTED_TASKS = ("item2image", "image2item", "fusionseqrec")


class MQL4GRec(GenerativeRecommender):
    @classmethod
    def build_semantic_ids(cls, config, dataset, train_dataset):
        item_tokens = dataset.field2id_token[dataset.iid_field]
        parts = {}
        for modality in MODALITIES:
            path = published_codes_path(config, modality)
            try:
                parts[modality] = load_published_codes(path, item_tokens)
            except FileNotFoundError as error:
                raise FileNotFoundError(f"MQL4GRec reads each item's text and image codes from files beside the "
                                        f"dataset; {error} Try --dataset=amazon-instruments-mm, which ships "
                                        f"them.") from error
        semantic_ids = SemanticIds.concat(parts)
        semantic_ids.fit_seconds = 0.0  # nothing is fitted: the codes are read
        semantic_ids.cache_path = ", ".join(published_codes_path(config, modality) for modality in MODALITIES)
        return semantic_ids

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        parts = self.semantic_ids.quality["parts"]
        levels = parts["text"]["levels"]
        if parts["image"]["levels"] != levels:  # fusionseqrec swaps the modalities of one batch in place
            raise ValueError(f"MQL4GRec needs text and image codes of the same length, got {levels} and "
                             f"{parts['image']['levels']} levels in {self.semantic_ids.cache_path}.")
        columns = {"text": slice(0, levels), "image": slice(levels, None)}
        sizes = {m: self.vocab_sizes[columns[m]] for m in MODALITIES}
        self.vocab = {"text": SemanticIdVocab(sizes["text"])}
        self.vocab["image"] = SemanticIdVocab(sizes["image"], n_special=self.vocab["text"].size)
        self.prompt_length = int(config["prompt_tokens"])
        self.prompt_start = self.vocab["image"].size  # then prompt_length tokens per prompted task
        self.catalogues = torch.nn.ModuleDict()
        for modality in MODALITIES:
            tokens = self.vocab[modality].item_tokens(self.item_codes[:, columns[modality]])
            self.register_buffer(f"{modality}_tokens", tokens, persistent=False)  # derived from item_codes
            self.catalogues[modality] = PrefixConstraints(self.item_codes[:, columns[modality]], sizes[modality])
        self.backbone = EncoderDecoder(
            vocab_size=self.prompt_start + self.prompt_length * len(PROMPTED_TASKS), d_model=int(config["d_model"]),
            num_heads=int(config["num_heads"]), d_kv=int(config["d_kv"]), d_ff=int(config["d_ff"]),
            num_encoder_layers=int(config["num_encoder_layers"]), num_decoder_layers=int(config["num_decoder_layers"]),
            dropout=float(config["dropout"]),
        )
        # The official datasets hold one translation sample per item and one sequence sample per training target;
        # a batch of B targets is matched by this many items per translation task.
        self.items_per_sequence = (self.n_items - 1) / max(1, len(dataset.inter_feat))

    def tokens(self, modality):
        return getattr(self, f"{modality}_tokens")

    def prompt(self, task, rows, device):
        first = self.prompt_start + PROMPTED_TASKS.index(task) * self.prompt_length
        return torch.arange(first, first + self.prompt_length, device=device).expand(rows, -1)

    def sequence_input(self, items, modality, task=None):
        """History items [B, T] -> encoder tokens [B, (P +) T * L] in `modality`, after `task`'s prompt if any."""
        tokens = self.tokens(modality)[items].flatten(1)
        if task is not None:
            tokens = torch.cat([self.prompt(task, len(items), items.device), tokens], dim=1)
        return tokens, tokens != self.vocab[modality].pad_id

    # ---- training -------------------------------------------------------------------------------------------
    def task_loss(self, input_ids, mask, target):
        """Mean next-code cross-entropy of target tokens [N, L] given encoder tokens (teacher forcing)."""
        logits = self.backbone.teacher_forced_logits(target, self.backbone.encode(input_ids, mask), mask).float()
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    def calculate_loss(self, interaction):
        items, _ = self.history(interaction)
        target = interaction[self.POS_ITEM_ID]
        users = len(items)
        losses, counts = [], []
        for modality in MODALITIES:  # seqrec, seqimage
            losses.append(self.task_loss(*self.sequence_input(items, modality), self.tokens(modality)[target]))
            counts.append(users)
        # fusionseqrec: each sample's history in one modality, its target in the other (50/50)
        text_in = torch.rand(users, device=items.device) < 0.5
        text_input, text_mask = self.sequence_input(items, "text", "fusionseqrec")
        image_input, image_mask = self.sequence_input(items, "image", "fusionseqrec")
        fused_target = torch.where(text_in.unsqueeze(1), self.tokens("image")[target], self.tokens("text")[target])
        losses.append(self.task_loss(torch.where(text_in.unsqueeze(1), text_input, image_input),
                                     torch.where(text_in.unsqueeze(1), text_mask, image_mask), fused_target))
        counts.append(users)
        # item2image / image2item on catalogue items drawn at the datasets' ratio
        n_items = max(1, math.ceil(users * self.items_per_sequence))
        catalogue_items = torch.randint(1, self.n_items, (n_items, 1), device=items.device)
        for source, task in (("text", "item2image"), ("image", "image2item")):
            other = "image" if source == "text" else "text"
            losses.append(self.task_loss(*self.sequence_input(catalogue_items, source, task),
                                         self.tokens(other)[catalogue_items[:, 0]]))
            counts.append(n_items)
        return sum(loss * count for loss, count in zip(losses, counts)) / sum(counts)

    # ---- inference ------------------------------------------------------------------------------------------
    def generate_topk(self, interaction, k):
        items, _ = self.history(interaction)
        found, scores = {}, {}
        for modality in MODALITIES:
            input_ids, mask = self.sequence_input(items, modality)
            output = generate_items(self.backbone, input_ids, mask, vocab=self.vocab[modality],
                                    beam_size=self.beam_size, topk=k, constraints=self.catalogues[modality])
            found[modality] = output.items
            scores[modality] = output.scores / self.vocab[modality].num_levels  # mean token log-probability
        return fuse_two_lists(found["text"], scores["text"], found["image"], scores["image"], k)


def fuse_two_lists(text_items, text_scores, image_items, image_scores, k):
    """MQL4GRec's ensemble: an item in both lists scores (s_text + s_image) / 2 + 1, any other its own score;
    -1 items are dropped. The lists are interleaved (text_0, image_0, text_1, ...) as the official code inserts
    them. Returns (items [B, k] with -1 where fewer exist, scores [B, k])."""
    valid_text, valid_image = text_items >= 0, image_items >= 0
    same = (text_items.unsqueeze(2) == image_items.unsqueeze(1)) & valid_text.unsqueeze(2) & valid_image.unsqueeze(1)
    image_for_text = (same * image_scores.nan_to_num(neginf=0.0).unsqueeze(1)).sum(2)
    text_for_image = (same * text_scores.nan_to_num(neginf=0.0).unsqueeze(2)).sum(1)
    text_scores = torch.where(same.any(2), (text_scores + image_for_text) / 2 + 1, text_scores)
    image_scores = torch.where(same.any(1), (image_scores + text_for_image) / 2 + 1, image_scores)
    candidates = torch.stack([text_items, image_items], dim=2).flatten(1)
    scores = torch.stack([text_scores, image_scores], dim=2).flatten(1).masked_fill(candidates < 0, float("-inf"))
    return top_candidates(candidates, mask_duplicates(candidates, scores), k)
