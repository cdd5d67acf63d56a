"""MQL4GRec: published text and image codes, five fine-tuning tasks in one vocabulary, two beams fused; the
pre-training stage on other domains, batches counted in samples."""
import json

import pytest
import torch

from recbole_genrec import safety
from recbole_genrec.model.mql4grec import fuse_two_lists, samples_per_target, write_pretraining_dataset
from recbole_genrec.quick_start import prepare_run, pretrain_first, run_recbole_genrec
from recbole_genrec.tokenization.published import load_published_codes

from conftest import TINY_MQL, check_run_and_reload, trained_model

TINY_PRETRAIN = {"mql4grec_tasks": ["seqrec", "seqimage"], "epochs": 1, "train_batch_size": 512, "learning_rate": 0.003}


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
    """Refused when the config is built, before the dataset loads."""
    from recbole_genrec.config import GenRecConfig

    with pytest.raises(ValueError, match=r"tiny-beauty\.text-codes\.json and .*image-codes\.json do not exist.*"
                                         r"amazon-instruments-mm"):
        GenRecConfig(model="MQL4GRec", dataset="tiny-beauty", config_dict=tiny(**TINY_MQL))


def test_mql4grec_ignores_the_target_item(tiny, tiny_mm):
    from test_leakage import _blinded

    model, interaction = trained_model(tiny, "MQL4GRec", tiny_mm, dataset="tiny-mm")
    with torch.no_grad():
        items, scores = model.generate_topk(interaction, 10)
        blinded_items, blinded_scores = model.generate_topk(_blinded(model, interaction), 10)
    assert torch.equal(items, blinded_items) and torch.allclose(scores, blinded_scores)


def test_fine_tuning_starts_from_the_pretrained_checkpoint_weights(tiny, tiny_mm):
    settings = tiny(**tiny_mm, pretrain_datasets="tiny-pre", pretrain_config=TINY_PRETRAIN)
    fine_tuning = pretrain_first("MQL4GRec", "tiny-mm", None, settings)
    checkpoint = safety.load_checkpoint(fine_tuning["pretrained_checkpoint"], map_location="cpu")
    assert checkpoint["config"]["dataset"] == "pretrain-tiny-pre" and checkpoint["config"]["mql4grec_tasks"] == [
        "seqrec", "seqimage"] and checkpoint["config"]["learning_rate"] == 0.003
    pretrained = {k[len("backbone."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("backbone.")}
    model = prepare_run("MQL4GRec", "tiny-mm", None, fine_tuning)[2]
    scratch = prepare_run("MQL4GRec", "tiny-mm", None, tiny(**tiny_mm))[2]
    weights = model.backbone.state_dict()
    assert set(weights) == set(pretrained)
    assert all(torch.equal(weights[key], pretrained[key]) for key in weights)
    assert not torch.equal(scratch.backbone.embedding.weight, model.backbone.embedding.weight)
    # the catalogue is the target's: its codes, not the pre-training domain's
    assert torch.equal(model.item_codes, scratch.item_codes)


def test_one_vocabulary_across_domains(tiny, tiny_mm, workdir):
    """A code token is the same embedding row in every domain (`<a_c>` -> 2 + c, `<B_c>` -> 2 + 5 x code_num + c)
    and in the merged pre-training dataset."""
    code_num, levels, built = 8, 4, {}
    for domain in ("tiny-mm", "tiny-pre"):
        _, dataset, model, *_ = prepare_run("MQL4GRec", domain, None, tiny(**tiny_mm))
        item_tokens = list(dataset.field2id_token[dataset.iid_field])
        built[domain] = model, item_tokens
        codes = {m: json.loads((workdir / "mm-data" / domain / f"{domain}.{m}-codes.json").read_text())
                 for m in ("text", "image")}
        for item in range(1, len(item_tokens)):
            for modality, first_level in (("text", 0), ("image", levels)):
                published = [int(token.split("_")[1][:-1]) for token in codes[modality][item_tokens[item]]]
                assert model.tokens(modality)[item].tolist() == [2 + (first_level + level) * code_num + code
                                                                 for level, code in enumerate(published)]
    # the merged pre-training dataset keeps every item's tokens: the same rows as in its own domain
    name, root = write_pretraining_dataset(str(workdir / "mm-data"), ["tiny-pre"], "tiny-mm", str(workdir / "merged"))
    _, dataset, merged, *_ = prepare_run("MQL4GRec", name, None, tiny(**{**tiny_mm, "data_path": root,
                                                                          "load_col": {"inter": ["user_id", "item_id",
                                                                                                 "timestamp"]}}))
    merged_ids = {token: index for index, token in enumerate(dataset.field2id_token[dataset.iid_field])}
    own, own_tokens = built["tiny-pre"]
    assert len(merged_ids) == len(own_tokens)
    for item in range(1, len(own_tokens)):
        for modality in ("text", "image"):
            assert torch.equal(merged.tokens(modality)[merged_ids[f"tiny-pre:{own_tokens[item]}"]],
                               own.tokens(modality)[item])
    assert merged.backbone.vocab_size == own.backbone.vocab_size


@pytest.mark.parametrize("setting, message", [
    ({"pretrain_datasets": "tiny-pre,tiny-absent"},
     r"pretrain_datasets: 'tiny-absent' not found: no tiny-absent/tiny-absent\.inter under .*Fix the name or put the "
     r"domain's atomic files there.*tiny-pre"),
    ({"pretrain_datasets": "tiny-beauty"},
     r"pretrain_datasets: 'tiny-beauty' has no tiny-beauty\.text-codes\.json and no tiny-beauty\.image-codes\.json"
     r".*Drop 'tiny-beauty' from pretrain_datasets or add its code files.*tiny-pre"),
    ({"pretrained_checkpoint": "absent/MQL4GRec.pth"}, r"pretrained_checkpoint absent/MQL4GRec\.pth not found"),
    ({"mql4grec_tasks": ["seqrec", "seqtext"]}, r"mql4grec_tasks .*'seqtext'.*choose tasks among seqrec, seqimage"),
])
def test_bad_pretraining_settings_fail_before_any_work(tiny, tiny_mm, workdir, setting, message):
    saved = workdir / "bad-setting-run"
    settings = tiny(**{**tiny_mm, **setting, "checkpoint_dir": str(saved / "saved"), "cache_dir": str(saved / "cache")})
    with pytest.raises(ValueError, match=message):
        run_recbole_genrec("MQL4GRec", "tiny-mm", config_dict=settings)
    assert not saved.exists()  # nothing was read, merged or trained


def test_train_batch_size_counts_samples(tiny, tiny_mm):
    config, dataset, model, train_data, *_ = prepare_run("MQL4GRec", "tiny-mm", None,
                                                         tiny(**{**tiny_mm, "train_batch_size": 300}))
    targets, items = len(train_data.dataset), dataset.item_num - 1
    per_target = samples_per_target(config["mql4grec_tasks"], items, targets)
    assert per_target == pytest.approx(3 + 2 * items / targets)
    assert train_data.step == round(300 / per_target) and config["train_batch_samples"] == 300
    counted = []
    task_loss = model.task_loss
    model.task_loss = lambda input_ids, mask, target: counted.append(len(target)) or task_loss(input_ids, mask, target)
    model.calculate_loss(next(iter(train_data)))
    assert len(counted) == 5 and abs(sum(counted) - 300) <= per_target + 2  # rounding to whole targets and items
    # pre-training's two sequence tasks: 2 samples per target
    assert samples_per_target(["seqrec", "seqimage"], items, targets) == 2
