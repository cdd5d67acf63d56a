"""Published semantic IDs: codes another pipeline computed, shipped beside a dataset as
`<dataset>.<modality>-codes.json` ({item id: ["<a_170>", "<b_224>", ...]}), e.g. the text- and image-derived codes
MQL4GRec published for amazon-instruments-mm (their encoders, LLaMA and CLIP ViT-L/14, are out of reach offline).

A token is `<letter_code>`; the letter names the level, the number is the code. MQL4GRec uses the codes as
published: items sharing a full code stay shared (quality report: `collision_rate`), and the catalogue reaches the
lowest item id of such a group (inference/prefix.py). `tokenizer: Published` gives them to a model of the default
tokenizer hook (TIGER, RPG, LIGER) in place of a fitted tokenizer, with a collision policy (TIGER's append_digit by
default), e.g. TIGER on the text codes beside MQL4GRec on amazon-instruments-mm.
"""
import json
import logging
import os
import re

import torch

from recbole_genrec.tokenization.base import SemanticIds
from recbole_genrec.tokenization.collision import COLLISION_POLICIES, POLICIES_NEEDING_DISTANCES, apply_collision_policy
from recbole_genrec.tokenization.quality import format_quality, sid_quality

logger = logging.getLogger("recbole_genrec")

TOKEN = re.compile(r"<([A-Za-z]+)_(\d+)>")
PUBLISHED = "Published"  # the `tokenizer` name that reads codes instead of fitting them
PUBLISHED_PARAMS = {"modality": "text", "collision": "append_digit"}  # its tokenizer_params, with their defaults


def published_codes_path(config, modality: str) -> str:
    return os.path.join(config["data_path"], f"{config['dataset']}.{modality}-codes.json")


def load_published_codes(path: str, item_tokens) -> SemanticIds:
    """Codes [n_items + 1, L] for the internal item ids (item_tokens[i] = external id of internal id i; row 0 =
    padding). Every item of the dataset must have a code of the same length."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Published codes not found: {path}. It must map every item id to its code tokens, "
                                f"e.g. {{\"B002SQJL9U\": [\"<a_170>\", \"<b_224>\", \"<c_251>\", \"<d_151>\"]}}.")
    try:
        with open(path, encoding="utf-8") as handle:
            mapping = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from error
    item_tokens = list(item_tokens)
    missing = [token for token in item_tokens[1:] if token not in mapping]
    if missing:
        raise ValueError(f"{path} has no codes for {len(missing)} of {len(item_tokens) - 1} items "
                         f"(e.g. {missing[:5]}): it must cover every item of the dataset.")
    rows = []
    for token in item_tokens[1:]:
        parsed = [TOKEN.fullmatch(str(code)) for code in mapping[token]]
        if not parsed or not all(parsed):
            raise ValueError(f"{path}: item {token} has codes {mapping[token]}; expected tokens like '<a_170>'.")
        rows.append([int(match.group(2)) for match in parsed])
    lengths = {len(row) for row in rows}
    if len(lengths) != 1:
        raise ValueError(f"{path}: codes of different lengths {sorted(lengths)}; every item needs the same number.")
    codes = torch.tensor(rows, dtype=torch.long)
    vocab_sizes = [int(size) for size in (codes.max(0).values + 1)]
    quality = sid_quality(codes, vocab_sizes)
    quality["source"] = os.path.basename(path)
    return SemanticIds(codes=torch.cat([torch.zeros(1, codes.shape[1], dtype=torch.long), codes]),
                       vocab_sizes=vocab_sizes, quality=quality)


def published_params(config) -> dict:
    """`tokenizer_params` of `tokenizer: Published`, with its defaults, checked (unknown keys, collision policy)."""
    params = dict(config["tokenizer_params"] or {})
    unknown = sorted(set(params) - set(PUBLISHED_PARAMS))
    if unknown:
        raise ValueError(f"tokenizer_params {unknown} do not apply to tokenizer {PUBLISHED}, which reads the codes: "
                         f"it takes {', '.join(PUBLISHED_PARAMS)} (e.g. tokenizer_params: {PUBLISHED_PARAMS}).")
    params = {**PUBLISHED_PARAMS, **params}
    policy = params["collision"]
    if policy not in COLLISION_POLICIES or policy in POLICIES_NEEDING_DISTANCES:
        usable = [name for name in COLLISION_POLICIES if name not in POLICIES_NEEDING_DISTANCES]
        raise ValueError(f"tokenizer_params.collision {policy!r} for tokenizer {PUBLISHED}: choose one of "
                         f"{', '.join(usable)} (read codes have no distances to reassign by).")
    return params


def check_published_source(config):
    """Before any work: the codes file `tokenizer: Published` reads exists."""
    params = published_params(config)
    path = published_codes_path(config, params["modality"])
    if not os.path.isfile(path):
        raise ValueError(f"tokenizer {PUBLISHED} reads the items' codes from {path}, which does not exist: set "
                         f"tokenizer_params.modality to a file <dataset>.<modality>-codes.json beside the dataset "
                         f"(amazon-*-mm ship text and image), or choose a tokenizer that fits IDs (e.g. RQKMeans).")


def published_semantic_ids(config, dataset) -> SemanticIds:
    """The dataset's published codes of `tokenizer_params.modality` as the model's semantic IDs, with the collision
    policy applied (append_digit, TIGER's: items sharing a code get distinct IDs)."""
    params = published_params(config)
    path = published_codes_path(config, params["modality"])
    read = load_published_codes(path, dataset.field2id_token[dataset.iid_field])
    codes, vocab_sizes = apply_collision_policy(params["collision"], read.codes[1:], read.vocab_sizes)
    quality = {**sid_quality(codes, vocab_sizes), "source": os.path.basename(path),
               "collision_rate_before_policy": read.quality["collision_rate"]}
    semantic_ids = SemanticIds(codes=torch.cat([torch.zeros(1, codes.shape[1], dtype=torch.long), codes]),
                               vocab_sizes=vocab_sizes, quality=quality)
    semantic_ids.fit_seconds, semantic_ids.cache_path = 0.0, path  # nothing is fitted: the codes are read
    logger.info(f"{PUBLISHED}: {format_quality(quality)}")
    return semantic_ids
