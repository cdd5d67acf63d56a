"""MQL4GRec — Multimodal Quantitative Language for Generative Recommendation (Zhai et al., ICLR 2025): pre-training
on other domains, then fine-tuning on the target dataset.

Representation and tokenization: every item has a text code and an image code (4 levels x 256 each), the
"quantitative languages" of its two modalities; here they are the codes the authors published for the dataset
(`<dataset>.text-codes.json`, `.image-codes.json`; tokenization/published.py), used as published. Both sit side by
side in `item_codes` (text columns first) and in one token vocabulary: text codes, then image codes, then the soft
prompt tokens of the tasks that have one. Backbone: TIGER's T5-style encoder-decoder (4 + 4 layers, d_model 128).
Training, the tasks of `mql4grec_tasks` (fine-tuning: all five of the official code; pre-training: seqrec and
seqimage), mixed as its concatenated datasets are (each sample counts once; `train_batch_size` counts samples):
  seqrec        history as text codes -> next item's text code
  seqimage      history as image codes -> next item's image code
  fusionseqrec  prompt + history in one modality -> next item's code in the other (50/50 per sample)
  item2image    prompt + an item's text code -> its image code (one sample per catalogue item per epoch)
  image2item    prompt + an item's image code -> its text code
Inference: the shared constrained beam search twice (seqrec and seqimage inputs, beam 20), each list mapped to
items; an item in both lists scores (s_text + s_image) / 2 + 1, any other its one score, s = the code's mean token
log-probability; top-K. Defaults: properties/model/MQL4GRec.yaml; deviations in the README.
Pre-training (`pretrain_datasets`, `MQL4GRec.pretraining_run`): the domains' atomic files and codes are merged into
one atomic dataset (ids prefixed by the domain), trained with `pretrain_config` on top of the run's settings;
fine-tuning starts from that checkpoint's backbone (`pretrained_checkpoint`).
"""
import json
import math
import os

import torch
import torch.nn.functional as F

from recbole_genrec.inference import PrefixConstraints, SemanticIdVocab, generate_items, mask_duplicates, top_candidates
from recbole_genrec.model.base import GenerativeRecommender
from recbole_genrec.model.layers import EncoderDecoder
from recbole_genrec.tokenization import SemanticIds
from recbole_genrec.tokenization.published import load_published_codes, published_codes_path

MODALITIES = ("text", "image")
PROMPTED_TASKS = ("item2image", "image2item", "fusionseqrec")
SEQUENCE_TASKS = ("seqrec", "seqimage", "fusionseqrec")  # one sample per training target
TRANSLATION_TASKS = ("item2image", "image2item")  # one sample per catalogue item
TASKS = SEQUENCE_TASKS + TRANSLATION_TASKS
PRETRAIN_COLUMNS = ("user_id", "item_id", "timestamp")


def samples_per_target(tasks, n_items, n_targets):
    """Training samples one training target (RecBole row) stands for: one per sequence task, and per translation
    task the catalogue's items spread over the targets, as the official concatenated datasets count them."""
    sequence = sum(task in SEQUENCE_TASKS for task in tasks)
    translation = sum(task in TRANSLATION_TASKS for task in tasks)
    return sequence + translation * n_items / max(1, n_targets)


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
        code_num = int(config["code_num"])
        for modality, part in parts.items():
            needed = max(part.vocab_sizes)
            if needed > code_num:
                raise ValueError(f"{published_codes_path(config, modality)} has codes up to {needed - 1}, above "
                                 f"code_num {code_num}: raise code_num to at least {needed}.")
            part.vocab_sizes = [code_num] * part.n_levels  # one vocabulary across domains (module docstring)
        semantic_ids = SemanticIds.concat(parts)
        semantic_ids.fit_seconds = 0.0  # nothing is fitted: the codes are read
        semantic_ids.cache_path = ", ".join(published_codes_path(config, modality) for modality in MODALITIES)
        return semantic_ids

    @classmethod
    def prepare_training_split(cls, config, dataset, train_dataset):
        """`train_batch_size` counts samples, as the official HF batches do; a RecBole batch row (training target)
        stands for `samples_per_target` samples, so the loader gets that many fewer rows. Runs before any loader
        exists; the samples are kept in `train_batch_samples` (a reloaded checkpoint's config converts again)."""
        samples = config["train_batch_samples"] or config["train_batch_size"]
        per_target = samples_per_target(config["mql4grec_tasks"], dataset.item_num - 1, len(train_dataset.inter_feat))
        config["train_batch_samples"] = samples
        config["train_batch_size"] = max(1, round(samples / per_target))

    # ---- the pre-training stage (quick_start.pretrain_first runs it before fine-tuning) ----------------------
    @classmethod
    def check_config(cls, config):
        """Before any work (GenRecConfig): the dataset's code files, the task list, the pre-trained checkpoint and
        every pre-training domain (atomic file with user_id, item_id, timestamp and both code files, beside the
        target dataset)."""
        missing = [path for path in (published_codes_path(config, m) for m in MODALITIES) if not os.path.isfile(path)]
        if missing:
            raise ValueError(f"MQL4GRec reads each item's text and image codes from files beside the dataset, and "
                             f"{' and '.join(missing)} {'do' if len(missing) > 1 else 'does'} not exist. Try "
                             f"--dataset=amazon-instruments-mm, which ships them.")
        unknown = [task for task in config["mql4grec_tasks"] or () if task not in TASKS]
        if unknown or not config["mql4grec_tasks"]:
            raise ValueError(f"mql4grec_tasks {config['mql4grec_tasks']!r}: choose tasks among {', '.join(TASKS)}.")
        checkpoint = config["pretrained_checkpoint"]
        if checkpoint and not os.path.isfile(checkpoint):
            raise ValueError(f"pretrained_checkpoint {checkpoint} not found: give the .pth file a pre-training run "
                             f"saved, or pre-train in the same command with --pretrain_datasets=DOMAIN,...")
        for name in pretrain_domains(config):
            pretrain_domain_files(os.path.dirname(config["data_path"]), name, config["dataset"])

    @classmethod
    def pretraining_run(cls, config, config_dict):
        """(dataset, settings) of the pre-training run on `pretrain_datasets` (merged into one atomic dataset under
        `cache_dir`): the run's settings with `pretrain_config` on top; no validation (the last epoch is kept)."""
        name, data_root = write_pretraining_dataset(os.path.dirname(config["data_path"]), pretrain_domains(config),
                                                    config["dataset"], os.path.join(config["cache_dir"], "pretrain"))
        settings = {key: value for key, value in config_dict.items() if key != "dataset"}
        settings.update(config["pretrain_config"] or {})
        settings.update(data_path=data_root, load_col={"inter": list(PRETRAIN_COLUMNS)}, pretrain_datasets=None,
                        pretrained_checkpoint=None, eval_step=0)
        return name, settings

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
        self.tasks = tuple(config["mql4grec_tasks"])
        # The official datasets hold one translation sample per item and one sequence sample per training target;
        # a batch of B targets is matched by this many items per translation task.
        self.items_per_sequence = (self.n_items - 1) / max(1, len(dataset.inter_feat))
        if config["pretrained_checkpoint"]:
            self.load_pretrained_backbone(config["pretrained_checkpoint"])

    def load_pretrained_backbone(self, path):
        """Fine-tuning starts from a pre-training run's backbone (embeddings and layers; the catalogue is this
        dataset's). The shared vocabulary makes every row mean the same token in both (module docstring)."""
        from recbole_genrec import safety

        state = safety.load_checkpoint(path, map_location="cpu")["state_dict"]
        backbone = {key[len("backbone."):]: value for key, value in state.items() if key.startswith("backbone.")}
        own = self.backbone.state_dict()
        differ = [f"{key} {tuple(backbone[key].shape)} vs {tuple(own[key].shape)}" for key in own
                  if key in backbone and backbone[key].shape != own[key].shape]
        missing = [key for key in own if key not in backbone]
        if differ or missing:
            raise ValueError(f"pretrained_checkpoint {path} does not fit this model ({'; '.join(differ[:3])}"
                             f"{' missing ' + ', '.join(missing[:3]) if missing else ''}): pre-train with the same "
                             f"backbone sizes, code_num and prompt_tokens as the fine-tuning run.")
        self.backbone.load_state_dict(backbone)

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
        for task, modality in (("seqrec", "text"), ("seqimage", "image")):
            if task in self.tasks:
                losses.append(self.task_loss(*self.sequence_input(items, modality), self.tokens(modality)[target]))
                counts.append(users)
        if "fusionseqrec" in self.tasks:  # each sample's history in one modality, its target in the other (50/50)
            text_in = (torch.rand(users, device=items.device) < 0.5).unsqueeze(1)
            text_input, text_mask = self.sequence_input(items, "text", "fusionseqrec")
            image_input, image_mask = self.sequence_input(items, "image", "fusionseqrec")
            fused_target = torch.where(text_in, self.tokens("image")[target], self.tokens("text")[target])
            losses.append(self.task_loss(torch.where(text_in, text_input, image_input),
                                         torch.where(text_in, text_mask, image_mask), fused_target))
            counts.append(users)
        # item2image / image2item on catalogue items drawn at the datasets' ratio
        n_items = max(1, math.ceil(users * self.items_per_sequence))
        catalogue_items = torch.randint(1, self.n_items, (n_items, 1), device=items.device)
        for source, task in (("text", "item2image"), ("image", "image2item")):
            if task in self.tasks:
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


# ---- pre-training data: several domains as one atomic dataset ------------------------------------------------
def pretrain_domains(config):
    """`pretrain_datasets` (a list, or a comma-separated string as the command line gives it) -> names."""
    value = config["pretrain_datasets"] or []
    names = value.split(",") if isinstance(value, str) else list(value)
    return [str(name).strip() for name in names if str(name).strip()]


def pretrain_domain_files(root, name, target):
    """The atomic file and the two code files of pre-training domain `name` under `root` (the target dataset's
    folder); a clear error naming the domain and the fix when one is missing or the columns differ."""
    folder = os.path.join(root, name)
    inter = os.path.join(folder, f"{name}.inter")
    available = sorted(d for d in os.listdir(root) if d != target
                       and all(os.path.isfile(os.path.join(root, d, f"{d}.{m}-codes.json")) for m in MODALITIES))
    fix = f"Domains with both code files beside {target}: {', '.join(available) or 'none'}."
    if not os.path.isfile(inter):
        raise ValueError(f"pretrain_datasets: '{name}' not found: no {name}/{name}.inter under {root} (pre-training "
                         f"domains are read beside the target dataset {target}). Fix the name or put the domain's "
                         f"atomic files there. {fix}")
    codes = {m: os.path.join(folder, f"{name}.{m}-codes.json") for m in MODALITIES}
    absent = [os.path.basename(path) for path in codes.values() if not os.path.isfile(path)]
    if absent:
        raise ValueError(f"pretrain_datasets: '{name}' has no {' and no '.join(absent)}: MQL4GRec pre-trains on each "
                         f"domain's published text and image codes. Drop '{name}' from pretrain_datasets or add its "
                         f"code files. {fix}")
    with open(inter, encoding="utf-8") as handle:
        columns = [field.split(":")[0] for field in handle.readline().rstrip("\n").split("\t")]
    if not set(PRETRAIN_COLUMNS) <= set(columns):
        raise ValueError(f"pretrain_datasets: {inter} has columns {columns}; pre-training reads "
                         f"{', '.join(PRETRAIN_COLUMNS)} (timestamp orders each sequence).")
    return inter, codes, [columns.index(column) for column in PRETRAIN_COLUMNS]


def write_pretraining_dataset(root, names, target, out_root):
    """The domains' interactions and codes as one atomic dataset `pretrain-<a>+<b>` under `out_root`; user and
    item ids are prefixed with their domain (`amazon-arts-mm:B003D7B7C2`), so no two domains share a user or an
    item and RecBole's leave-one-out split trains on each user's items[:-2], as the official per-domain datasets.
    Returns (dataset name, data_path)."""
    name = "pretrain-" + "+".join(names)
    folder = os.path.join(out_root, name)
    os.makedirs(folder, exist_ok=True)
    merged_codes = {modality: {} for modality in MODALITIES}
    partial = f".{os.getpid()}.partial"  # each file appears whole (os.replace): runs in parallel may share the folder
    with open(os.path.join(folder, f"{name}.inter{partial}"), "w", encoding="utf-8") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for domain in names:
            inter, codes, index = pretrain_domain_files(root, domain, target)
            with open(inter, encoding="utf-8") as handle:
                next(handle)
                for line in handle:
                    fields = line.rstrip("\n").split("\t")
                    user, item, time = (fields[i] for i in index)
                    out.write(f"{domain}:{user}\t{domain}:{item}\t{time}\n")
            for modality, path in codes.items():
                with open(path, encoding="utf-8") as handle:
                    codes_of_domain = json.load(handle)
                merged_codes[modality].update({f"{domain}:{item}": code for item, code in codes_of_domain.items()})
    for modality, mapping in merged_codes.items():
        with open(os.path.join(folder, f"{name}.{modality}-codes.json{partial}"), "w", encoding="utf-8") as handle:
            json.dump(mapping, handle)
    for file in (f"{name}.inter", *(f"{name}.{modality}-codes.json" for modality in MODALITIES)):
        os.replace(os.path.join(folder, file + partial), os.path.join(folder, file))
    return name, out_root
