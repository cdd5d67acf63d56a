"""`tokenizer: Published`: a model of the default tokenizer hook (TIGER here) trains on a dataset's published codes
instead of fitting IDs on item content, as on the amazon-*-mm datasets beside MQL4GRec."""
import json
import os

import pytest
import torch

from recbole_genrec.config import GenRecConfig
from recbole_genrec.quick_start import prepare_run

from conftest import TINY_TIGER, check_run_and_reload

PUBLISHED_TIGER = {**{key: value for key, value in TINY_TIGER.items() if key != "tokenizer_params"},
                   "tokenizer": "Published", "tokenizer_params": {"modality": "text"}}


def _settings(tiny, tiny_mm, **overrides):
    settings = tiny(data_path=tiny_mm["data_path"], **PUBLISHED_TIGER)
    settings.pop("text_fields")  # no item file on the domain: nothing but the codes describes an item
    return {**settings, **overrides}


def test_tiger_reads_the_published_codes_and_tells_shared_ones_apart_by_a_digit(tiny, tiny_mm):
    config, dataset, model, *_ = prepare_run("TIGER", "tiny-mm", None, _settings(tiny, tiny_mm))
    with open(os.path.join(tiny_mm["data_path"], "tiny-mm", "tiny-mm.text-codes.json")) as handle:
        published = json.load(handle)
    tokens = dataset.field2id_token[dataset.iid_field]
    read = torch.tensor([[int(code.split("_")[1][:-1]) for code in published[token]] for token in tokens[1:]])
    assert torch.equal(model.item_codes[1:, :4], read)  # the published codes, in RecBole's item order
    largest_group = int(torch.unique(read, dim=0, return_counts=True)[1].max())
    assert largest_group > 1 and model.item_codes.shape[1] == 5 and model.vocab_sizes[4] == largest_group
    assert len(torch.unique(model.item_codes[1:], dim=0)) == len(tokens) - 1  # every item its own ID
    assert dataset.semantic_ids.quality["collision_rate_before_policy"] > 0 == dataset.semantic_ids.quality[
        "collision_rate"]


def test_tiger_on_published_codes_runs_and_its_checkpoint_reloads(tiny, tiny_mm):
    check_run_and_reload("TIGER", "tiny-mm", _settings(tiny, tiny_mm))


@pytest.mark.parametrize("model, overrides, message", [
    ("TIGER", {"tokenizer_params": {"modality": "audio"}}, "tiny-mm.audio-codes.json, which does not exist"),
    ("TIGER", {"tokenizer_params": {"modality": "text", "codebook_size": 256}},
     "tokenizer_params ['codebook_size'] do not apply to tokenizer Published"),
    ("TIGER", {"tokenizer_params": {"collision": "reassign_last_level"}}, "choose one of append_digit, none"),
    ("LETTER", {}, "LETTER builds its own IDs"),
])
def test_bad_published_settings_fail_before_any_work(tiny, tiny_mm, model, overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        GenRecConfig(model=model, dataset="tiny-mm", config_dict=_settings(tiny, tiny_mm, **overrides))
