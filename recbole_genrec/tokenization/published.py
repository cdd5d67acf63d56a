"""Published semantic IDs: codes another pipeline computed, shipped beside a dataset as
`<dataset>.<modality>-codes.json` ({item id: ["<a_170>", "<b_224>", ...]}), e.g. the text- and image-derived codes
MQL4GRec published for amazon-instruments-mm (their encoders, LLaMA and CLIP ViT-L/14, are out of reach offline).

A token is `<letter_code>`; the letter names the level, the number is the code. The codes are used as published:
items sharing a full code stay shared (quality report: `collision_rate`), and the catalogue reaches the lowest
item id of such a group (inference/prefix.py).
"""
import json
import os
import re

import torch

from recbole_genrec.tokenization.base import SemanticIds
from recbole_genrec.tokenization.quality import sid_quality

TOKEN = re.compile(r"<([A-Za-z]+)_(\d+)>")


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
