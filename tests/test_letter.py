"""LETTER: the collaborative tokenizer (CF embeddings, Sinkhorn-balanced codes, collision pass, code groups), the
temperature-scaled cross-entropy, and benchmarks/compare_tokenizers.py."""
import numpy as np
import pytest
import torch

from recbole_genrec.quick_start import prepare_run, run_recbole_genrec
from recbole_genrec.representation import item_cf_embeddings
from recbole_genrec.tokenization import build_tokenizer, sinkhorn_assignment
from recbole_genrec.tokenization.letter import CodeGroups

from conftest import TINY_LETTER, TINY_TIGER, overfit_one_batch


# ---- representation: collaborative embeddings -------------------------------------------------------------------
def test_cf_embeddings_cover_training_items_only_and_are_cached(tiny, caplog):
    config, dataset, _, train_data, _, _ = prepare_run("LETTER", "tiny-beauty", None, tiny(**TINY_LETTER))
    embeddings = item_cf_embeddings(config, dataset, train_data._dataset)
    trained = train_data._dataset.train_item_mask
    assert embeddings.shape == (dataset.item_num, 8) and embeddings.dtype == np.float32
    assert np.all(embeddings[~trained] == 0) and np.all(np.linalg.norm(embeddings[trained], axis=1) > 0)
    assert (~trained[1:]).sum() > 0  # the fixture has cold items, so the zero rows are a real check
    with caplog.at_level("INFO", logger="recbole_genrec"):
        again = item_cf_embeddings(config, dataset, train_data._dataset)
    assert np.array_equal(again, embeddings) and "Cache hit: cf-SASRec" in caplog.text


# ---- tokenization: LETTER ------------------------------------------------------------------------------------------
def test_letter_tokenizer_loss_is_finite_and_decreases_and_reports_cf_agreement(tiny):
    config, dataset, model, train_data, _, _ = prepare_run("LETTER", "tiny-beauty", None, tiny(**TINY_LETTER))
    quality = model.semantic_ids.quality
    report = quality["fit_report"]
    assert np.isfinite(report["first_epoch_loss"]) and np.isfinite(report["final_loss"])
    # Reconstruction, not the total: with the official detached residuals only level 0's commitment restrains the
    # latent, which spreads out as reconstruction improves, so the deeper levels' codebook terms can rise (the total
    # rises here, with or without the CF term).
    assert report["final_reconstruction_loss"] < report["first_epoch_reconstruction_loss"]
    agreement = quality["prefix_cf_agreement"]
    assert {"all_pairs", "same_prefix1", "same_prefix2", "same_prefix3"} <= set(agreement)
    assert agreement["n_items_with_cf"] == int(train_data._dataset.train_item_mask.sum())


def test_letter_tokenizer_needs_matching_collaborative_vectors():
    vectors = np.random.default_rng(0).normal(size=(41, 16)).astype(np.float32)
    params = {"num_levels": 2, "codebook_size": 4, "latent_dim": 8, "hidden_dims": [16], "epochs": 2}
    with pytest.raises(ValueError, match="collaborative"):
        build_tokenizer("LETTER", params).fit(vectors)
    with pytest.raises(ValueError, match="cf_params.hidden_size"):
        build_tokenizer("LETTER", params).fit(vectors, collaborative=np.ones((41, 5), dtype=np.float32))


def test_sinkhorn_assignment_balances_codes():
    distances = torch.rand(400, 8, generator=torch.Generator().manual_seed(0)) ** 4  # skewed: argmin is unbalanced
    counts = torch.bincount(sinkhorn_assignment(distances, epsilon=0.003), minlength=8)
    assert counts.sum() == 400 and counts.min() >= 30 and counts.max() <= 70  # 50 each when perfectly balanced


def test_batched_sinkhorn_solves_each_padded_problem_as_alone():
    generator = torch.Generator().manual_seed(1)
    sizes = [2, 5, 9, 1]
    problems = [torch.rand(size, 16, generator=generator) ** 3 for size in sizes]
    padded = torch.stack([torch.cat([p, torch.full((9 - len(p), 16), 1e6)]) for p in problems])  # padding: far
    batched = sinkhorn_assignment(padded, epsilon=0.003, rows=torch.tensor(sizes))
    for index, problem in enumerate(problems):
        assert torch.equal(batched[index, :len(problem)], sinkhorn_assignment(problem, epsilon=0.003))


def test_letter_collision_pass_matches_one_group_at_a_time(monkeypatch):
    from recbole_genrec.tokenization import letter
    from recbole_genrec.tokenization.rqvae import squared_distances

    tokenizer = build_tokenizer("LETTER", {"codebook_size": 8, "num_levels": 2, "latent_dim": 4})
    generator = torch.Generator().manual_seed(2)
    tokenizer.network = type("Net", (), {"codebooks": [None, torch.randn(8, 4, generator=generator)]})()
    residuals = torch.randn(300, 4, generator=generator)
    codes = torch.randint(0, 3, (300, 2), generator=generator)  # 9 IDs for 300 items: large collision groups

    def one_group_at_a_time(codes):  # the official generate_indices loop
        for _ in range(int(tokenizer.params["collision_rounds"])):
            _, group, sizes = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
            colliding = torch.nonzero(sizes[group] > 1).flatten()
            if not len(colliding):
                break
            for value in torch.unique(group[colliding]):
                members = colliding[group[colliding] == value]
                distances = squared_distances(residuals[members], tokenizer.network.codebooks[-1])
                codes[members, -1] = sinkhorn_assignment(distances, 0.003, 50)
        return codes

    expected = one_group_at_a_time(codes.clone())
    assert torch.equal(tokenizer._resolve_collisions_by_sinkhorn(residuals, codes.clone()), expected)  # one chunk
    monkeypatch.setattr(letter, "SINKHORN_CHUNK_ENTRIES", 8 * 40)  # several chunks per round
    assert torch.equal(tokenizer._resolve_collisions_by_sinkhorn(residuals, codes.clone()), expected)


def test_code_groups_sample_another_code_of_the_same_group():
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 1, 3])  # group 3 has one code: no other member to sample
    groups = CodeGroups(labels, "cpu")
    codes = torch.arange(10).repeat(20)
    other, has_other = groups.sample_other_member(codes)
    assert torch.equal(has_other, torch.from_numpy(labels != 3).repeat(20))
    assert torch.all(other[has_other] != codes[has_other])
    assert np.array_equal(labels[other[has_other].numpy()], labels[codes[has_other].numpy()])


# ---- model: loss ---------------------------------------------------------------------------------------------------
def test_generation_losses_are_finite_and_decrease(tiny):
    _, _, model, train_data, _, _ = prepare_run("LETTER", "tiny-beauty", None, tiny(**TINY_LETTER))
    losses = overfit_one_batch(model, next(iter(train_data)))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_letter_temperature_scales_the_cross_entropy(tiny):
    _, _, model, train_data, _, _ = prepare_run("LETTER", "tiny-beauty", None, tiny(**TINY_LETTER, ce_temperature=0.5))
    batch = next(iter(train_data))
    model.eval()
    with torch.no_grad():
        sharpened = model.calculate_loss(batch)
        model.ce_temperature = 1.0
        plain = model.calculate_loss(batch)
    assert model.ce_temperature == 1.0 and not torch.isclose(sharpened, plain)


# ---- end to end ----------------------------------------------------------------------------------------------------
def test_end_to_end_with_cold_start_report_and_checkpoint_reload(tiny):
    from recbole_genrec.quick_start import load_data_and_model
    from recbole_genrec.trainer import GenRecTrainer

    result = run_recbole_genrec(model="LETTER", dataset="tiny-beauty", config_dict=tiny(**TINY_LETTER))
    cold = result["test_cold_start"]
    assert cold["cold_users"] > 0 and cold["cold_users"] + cold["inset_users"] == result["test_users"]
    assert {"cold_recall@10", "inset_recall@10", "cold_items_in_top10"} <= set(cold)
    # Semantic IDs come back from the checkpoint, cold items from the split.
    config, model, dataset, _, _, test_data = load_data_and_model(result["checkpoint"])
    assert torch.equal(model.item_codes, dataset.semantic_ids.codes)
    trainer = GenRecTrainer(config, model)
    assert trainer.evaluate(test_data, load_best_model=False) == result["test_result"]
    assert trainer.last_cold_start == cold


# ---- benchmarks/compare_tokenizers.py ------------------------------------------------------------------------------
def test_compare_tokenizers_reports_both_tokenizers_against_the_same_cf_vectors(tiny, tmp_path):
    import os
    import sys

    import yaml

    from conftest import ROOT

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # the script imports benchmarks/common.py
    import compare_tokenizers as compare
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump({"per_model": {
        "TIGER": {"tokenizer_params": TINY_TIGER["tokenizer_params"]},
        "LETTER": {key: TINY_LETTER[key] for key in ("cf_params", "tokenizer_params")},
    }}))
    settings = {key: value for key, value in tiny().items() if key not in ("dataset", "tokenizer_params", "cf_params")}
    argv = ["--dataset=tiny-beauty", "--models=TIGER,LETTER", f"--profile={profile}", f"--out={tmp_path / 't.csv'}"]
    rows = compare.main(argv + [f"--{key}={value!r}" for key, value in settings.items()])
    assert [row["tokenizer"] for row in rows] == ["RQVAE", "LETTER"]
    assert rows[0]["cf_cos_all_pairs"] == rows[1]["cf_cos_all_pairs"]  # one set of CF vectors for both
    assert all(0 <= row["collision_rate"] <= 1 and "cf_cos_same_prefix1" in row for row in rows)
    assert (tmp_path / "t.csv").read_text().startswith("model,variant,tokenizer,codes")
    assert rows[0]["epochs"] == TINY_TIGER["tokenizer_params"]["epochs"]


def test_compare_tokenizers_variants_merge_into_the_model_yaml_and_scale_every_budget(tmp_path):
    import os
    import sys

    import yaml

    from conftest import ROOT
    from recbole_genrec.paths import find_properties_dir

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # the script imports benchmarks/common.py
    import compare_tokenizers as compare
    variants = tmp_path / "variants.yaml"
    variants.write_text(yaml.safe_dump({
        "LETTER before": {"model": "LETTER", "tokenizer_params": {"epochs": 3000, "collision_check_interval": 0}},
        "LETTER after": {"model": "LETTER"},
        "LIGER before": {"model": "LIGER", "config": {"tokenizer_fit_on": "all"}},
    }, sort_keys=False))
    with open(os.path.join(find_properties_dir(), "model", "LETTER.yaml")) as handle:
        letter = yaml.safe_load(handle)["tokenizer_params"]
    rows = compare.recipe_variants(str(variants), epoch_scale=0.01)
    assert [(label, model) for label, model, _ in rows] == [
        ("LETTER before", "LETTER"), ("LETTER after", "LETTER"), ("LIGER before", "LIGER")]
    before, after, liger = (settings for _, _, settings in rows)
    # the row's keys replace the yaml's, every other yaml key stays (a config's tokenizer_params replaces the dict)
    assert before["tokenizer_params"] == {**letter, "epochs": 30, "collision_check_interval": 0}
    assert after["tokenizer_params"] == {**letter, "epochs": round(letter["epochs"] * 0.01),
                                         "collision_check_interval": round(letter["collision_check_interval"] * 0.01)}
    assert liger["tokenizer_fit_on"] == "all" and liger["tokenizer_params"]["latent_dim"] == 128
