"""MQL4GRec: published text and image codes, five fine-tuning tasks in one vocabulary, two beams fused."""
import json
import os
import shutil

import pytest
import torch

from recbole_genrec.model.mql4grec import fuse_two_lists
from recbole_genrec.quick_start import _prepare
from recbole_genrec.tokenization.published import load_published_codes

from conftest import FIXTURES, check_run_and_reload, trained_model

TINY_MQL = {
    "d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1,
    "beam_size": 10, "warmup_steps": 10, "train_batch_size": 256, "learning_rate": 0.003,
}


@pytest.fixture(scope="session")
def tiny_mm(workdir):
    """tiny-beauty's interactions with synthetic published codes: text codes 4 x 8 with one collision, image
    codes 4 x 8 unique (as the published amazon-instruments-mm files: text collides a little, image not)."""
    root = workdir / "mm-data"
    folder = root / "tiny-mm"
    folder.mkdir(parents=True)
    shutil.copy(os.path.join(FIXTURES, "tiny-beauty", "tiny-beauty.inter"), folder / "tiny-mm.inter")
    items = sorted({line.split("\t")[1] for line in open(folder / "tiny-mm.inter").read().splitlines()[1:]})
    generator = torch.Generator().manual_seed(0)
    for modality, letters in (("text", "abcd"), ("image", "ABCD")):
        codes = torch.stack([torch.randperm(8 ** 3, generator=generator)[:len(items)] // 64,
                             torch.randperm(8 ** 3, generator=generator)[:len(items)] // 8 % 8,
                             torch.arange(len(items)) % 8, torch.arange(len(items)) // 8 % 8], dim=1)
        if modality == "text":
            codes[1] = codes[0]  # one published collision
        mapping = {item: [f"<{letters[l]}_{int(c)}>" for l, c in enumerate(row)] for item, row in zip(items, codes)}
        (folder / f"tiny-mm.{modality}-codes.json").write_text(json.dumps(mapping))
    return {"data_path": str(root), "dataset": "tiny-mm", **TINY_MQL}


def test_published_codes_are_read_for_every_item_and_bad_files_are_named(tmp_path):
    path = tmp_path / "d.text-codes.json"
    path.write_text(json.dumps({"A": ["<a_1>", "<b_7>"], "B": ["<a_1>", "<b_7>"], "C": ["<a_0>", "<b_2>"]}))
    ids = load_published_codes(str(path), ["[PAD]", "C", "A", "B"])
    assert ids.codes.tolist() == [[0, 0], [0, 2], [1, 7], [1, 7]] and ids.vocab_sizes == [2, 8]
    assert ids.quality["collision_rate"] == pytest.approx(2 / 3) and ids.quality["source"] == "d.text-codes.json"
    with pytest.raises(ValueError, match=r"no codes for 1 of 4 items \(e\.g\. \['D'\]\)"):
        load_published_codes(str(path), ["[PAD]", "A", "B", "C", "D"])
    path.write_text(json.dumps({"A": ["a_1"]}))
    with pytest.raises(ValueError, match="expected tokens like '<a_170>'"):
        load_published_codes(str(path), ["[PAD]", "A"])
    path.write_text(json.dumps({"A": ["<a_1>"], "B": ["<a_1>", "<b_2>"]}))
    with pytest.raises(ValueError, match="different lengths"):
        load_published_codes(str(path), ["[PAD]", "A", "B"])
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_published_codes(str(path), ["[PAD]", "A"])
    with pytest.raises(FileNotFoundError, match="every item id to its code tokens"):
        load_published_codes(str(tmp_path / "absent.json"), ["[PAD]", "A"])


def test_fusion_lifts_items_in_both_lists_and_keeps_each_item_once():
    text_items, text_scores = torch.tensor([[5, 7, 9]]), torch.tensor([[-0.1, -0.5, -0.9]])
    image_items, image_scores = torch.tensor([[9, 3, -1]]), torch.tensor([[-0.2, -0.3, float("-inf")]])
    items, scores = fuse_two_lists(text_items, text_scores, image_items, image_scores, k=5)
    # item 9 is in both: (-0.9 - 0.2) / 2 + 1 = 0.45, above every single-list item; -1 never appears
    assert items.tolist() == [[9, 5, 3, 7, -1]]
    assert scores[0, :4].tolist() == pytest.approx([0.45, -0.1, -0.3, -0.5])


def test_mql4grec_trains_five_tasks_and_ranks_valid_distinct_items(tiny, tiny_mm):
    model, interaction = trained_model(tiny, "MQL4GRec", tiny_mm, dataset="tiny-mm")
    parts = model.semantic_ids.quality["parts"]
    assert parts["text"]["levels"] == parts["image"]["levels"] == 4 and parts["text"]["collision_rate"] > 0
    assert model.backbone.vocab_size == 2 + 32 + 32 + 3 * 4  # specials, text, image, three 4-token prompts
    with torch.no_grad():
        items, scores = model.generate_topk(interaction, 10)
    assert torch.all(items >= 1) and all(len(set(row.tolist())) == 10 for row in items)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    model.train()
    loss = model.calculate_loss(interaction)
    loss.backward()
    prompt_rows = model.backbone.embedding.weight.grad[model.prompt_start:]
    assert torch.isfinite(loss) and torch.all(prompt_rows.abs().sum(1) > 0)  # every task prompt was trained


def test_mql4grec_end_to_end_and_checkpoint_reload(tiny, tiny_mm):
    check_run_and_reload("MQL4GRec", "tiny-mm", tiny(**tiny_mm))


def test_dataset_without_published_codes_names_the_file_and_a_dataset_that_has_them(tiny):
    with pytest.raises(FileNotFoundError, match=r"tiny-beauty\.text-codes\.json.*amazon-instruments-mm"):
        _prepare("MQL4GRec", "tiny-beauty", None, tiny(**TINY_MQL))


def test_mql4grec_ignores_the_target_item(tiny, tiny_mm):
    from test_leakage import _blinded

    model, interaction = trained_model(tiny, "MQL4GRec", tiny_mm, dataset="tiny-mm")
    with torch.no_grad():
        items, scores = model.generate_topk(interaction, 10)
        blinded_items, blinded_scores = model.generate_topk(_blinded(model, interaction), 10)
    assert torch.equal(items, blinded_items) and torch.allclose(scores, blinded_scores)
