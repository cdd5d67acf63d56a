"""Stage 2, tokenization: RQ-VAE and RQ-KMeans tokenizers, collision policies, quality figures, k-means helpers."""
import json
import logging
import math

import numpy as np
import pytest
import torch

from recbole_genrec.tokenization import (
    COLLISION_POLICIES,
    TOKENIZERS,
    SemanticIds,
    balanced_kmeans,
    build_tokenizer,
    collapse_warning,
    format_quality,
    get_collision_policy,
    kmeans,
    sid_quality,
)
from recbole_genrec.tokenization.collision import append_digit, keep_collisions, reassign_last_level
from recbole_genrec.tokenization.rqvae import ResidualQuantizedVAE

N_ITEMS, DIM = 300, 16
TINY_PARAMS = {
    "RQVAE": {"num_levels": 3, "codebook_size": 16, "latent_dim": 8, "hidden_dims": [32, 16], "epochs": 15,
              "batch_size": 128},
    "RQKMeans": {"num_levels": 3, "codebook_size": 16, "niter": 10},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def item_vectors():
    """[N_ITEMS + 1, DIM] Gaussian mixture of 12 clusters; row 0 = padding."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(12, DIM))
    vectors = centers[rng.integers(0, 12, N_ITEMS)] + rng.normal(size=(N_ITEMS, DIM))
    return np.vstack([np.zeros((1, DIM)), vectors]).astype(np.float32)


@pytest.fixture(scope="module")
def fitted(item_vectors):
    """Each tokenizer fitted once with seed 7 (shared by the tests that only read the result)."""
    return {name: build_tokenizer(name, params).fit(item_vectors, seed=7) for name, params in TINY_PARAMS.items()}


# ---- tokenizers ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TINY_PARAMS))
def test_same_seed_same_codes(name, item_vectors, fitted):
    again = build_tokenizer(name, TINY_PARAMS[name]).fit(item_vectors, seed=7)
    assert torch.equal(again.codes, fitted[name].codes)
    assert again.vocab_sizes == fitted[name].vocab_sizes


@pytest.mark.parametrize("name", list(TINY_PARAMS))
def test_append_digit_gives_unique_padded_codes_within_vocab(name, fitted):
    semantic_ids = fitted[name]
    levels = TINY_PARAMS[name]["num_levels"]
    assert semantic_ids.codes.dtype == torch.long
    assert tuple(semantic_ids.codes.shape) == (N_ITEMS + 1, levels + 1)  # + collision digit
    assert torch.all(semantic_ids.codes[0] == 0)  # padding row
    item_codes = semantic_ids.codes[1:]
    assert len(torch.unique(item_codes, dim=0)) == N_ITEMS
    assert len(semantic_ids.vocab_sizes) == levels + 1
    assert torch.all(item_codes >= 0)
    assert torch.all(item_codes < torch.tensor(semantic_ids.vocab_sizes))
    quality = semantic_ids.quality
    assert quality["n_items"] == N_ITEMS and quality["collision_policy"] == "append_digit"
    assert quality["n_unique_ids_after_policy"] == N_ITEMS
    # the raw report describes the codes before the digit: its max group size is the digit's vocabulary
    assert quality["max_items_per_id"] == semantic_ids.vocab_sizes[-1]
    json.dumps(quality)  # JSON-serialisable


@pytest.mark.parametrize("name", list(TINY_PARAMS))
def test_fit_mask_items_alone_determine_the_quantiser(name, item_vectors):
    """Items outside fit_mask still get codes, but changing their vectors must not change the fit items' codes."""
    fit_mask = np.zeros(N_ITEMS + 1, dtype=bool)
    fit_mask[1:201] = True
    params = {**TINY_PARAMS[name], "collision": "none"}
    reference = build_tokenizer(name, params).fit(item_vectors, fit_mask=fit_mask, seed=3)
    perturbed_vectors = item_vectors.copy()
    perturbed_vectors[201:] = np.random.default_rng(1).normal(scale=50.0, size=(N_ITEMS - 200, DIM))
    perturbed = build_tokenizer(name, params).fit(perturbed_vectors, fit_mask=fit_mask, seed=3)
    assert torch.equal(reference.codes[1:201], perturbed.codes[1:201])
    assert perturbed.quality["n_fit_items"] == 200 and perturbed.quality["n_items"] == N_ITEMS
    outside = perturbed.codes[201:]
    assert outside.shape == (N_ITEMS - 200, params["num_levels"])
    assert torch.all(outside < torch.tensor(perturbed.vocab_sizes))


def test_rqkmeans_caps_clusters_to_distinct_points(item_vectors, caplog):
    fit_mask = np.zeros(N_ITEMS + 1, dtype=bool)
    fit_mask[1:6] = True  # 5 fit items, 16 codes
    with caplog.at_level(logging.INFO, logger="recbole_genrec"):
        semantic_ids = build_tokenizer("RQKMeans", TINY_PARAMS["RQKMeans"]).fit(item_vectors, fit_mask=fit_mask)
    assert semantic_ids.codes[1:, 0].max() < 5
    assert "only 5 distinct residuals" in caplog.text


def test_rqkmeans_reassign_last_level_policy(item_vectors):
    params = {**TINY_PARAMS["RQKMeans"], "num_levels": 2, "codebook_size": 8, "collision": "reassign_last_level"}
    semantic_ids = build_tokenizer("RQKMeans", params).fit(item_vectors, seed=1)
    assert semantic_ids.codes.shape == (N_ITEMS + 1, 2)  # no level appended
    assert semantic_ids.quality["collision_rate"] > 0  # 300 items on 64 IDs collide before the policy
    assert semantic_ids.quality["collision_rate_after_policy"] < semantic_ids.quality["collision_rate"]


def test_rqvae_encode_codes_matches_fitted_raw_codes(item_vectors):
    tokenizer = build_tokenizer("RQVAE", {**TINY_PARAMS["RQVAE"], "epochs": 3, "collision": "none"})
    semantic_ids = tokenizer.fit(item_vectors, seed=0)
    codes = tokenizer.encode_codes(item_vectors[1:])
    assert torch.equal(codes, semantic_ids.codes[1:])


def test_rqvae_non_finite_loss_raises(item_vectors):
    tokenizer = build_tokenizer("RQVAE", {**TINY_PARAMS["RQVAE"], "epochs": 5, "lr": 1e30, "kmeans_init": False})
    with pytest.raises(RuntimeError, match=r"epoch \d+/5.*lr"):
        tokenizer.fit(item_vectors, seed=0)


def test_non_finite_inputs_are_rejected_before_fitting(item_vectors):
    vectors = item_vectors.copy()
    vectors[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf.*\[5\]"):
        build_tokenizer("RQVAE", TINY_PARAMS["RQVAE"]).fit(vectors)


def test_rqvae_dead_code_reset_reseeds_unused_codes():
    torch.manual_seed(0)
    network = ResidualQuantizedVAE(input_dim=6, hidden_dims=[8], latent_dim=4, num_levels=2, codebook_size=10)
    inputs = torch.randn(50, 6)
    with torch.no_grad():
        network.codebooks.data[0, 1:] = 1e3  # far away: only code 0 of level 1 is ever chosen
    dead = network.reset_dead_codes(inputs, torch.Generator().manual_seed(0))
    assert dead[0].tolist() == list(range(1, 10))
    first_level_residuals = network.encoder(inputs).detach()
    # each re-seeded code is now exactly one item's residual, so it gets used
    for code in dead[0].tolist():
        assert torch.isclose(network.codebooks[0, code], first_level_residuals, atol=1e-6).all(1).any()
    _, codes = network.level_residuals(inputs)
    assert len(torch.unique(codes[0])) > 1


def test_unknown_names_and_parameters_raise_listing_the_options():
    with pytest.raises(ValueError, match="RQVAE.*RQKMeans"):
        build_tokenizer("RQVAEX", {})
    with pytest.raises(ValueError, match="append_digit.*none.*reassign_last_level"):
        build_tokenizer("RQKMeans", {"collision": "sinkhorn_everything"})
    with pytest.raises(ValueError, match="append_digit"):
        get_collision_policy("nope")
    with pytest.raises(ValueError, match="codebook_sizes.*codebook_size"):
        build_tokenizer("RQVAE", {"codebook_sizes": 8})
    assert set(TOKENIZERS) >= {"RQVAE", "RQKMeans"}


# ---- SemanticIds --------------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, fitted):
    semantic_ids = fitted["RQKMeans"]
    path = tmp_path / "sid.pt"
    semantic_ids.save(path)
    torch.load(path, weights_only=True)  # plain tensors/lists/dicts only
    loaded = SemanticIds.load(path)
    assert torch.equal(loaded.codes, semantic_ids.codes)
    assert loaded.vocab_sizes == semantic_ids.vocab_sizes
    assert loaded.quality == semantic_ids.quality


def test_export_writes_token_to_codes_json(tmp_path):
    semantic_ids = SemanticIds(codes=torch.tensor([[0, 0], [1, 2], [3, 0]]), vocab_sizes=[4, 3], quality={})
    path = tmp_path / "sid.json"
    semantic_ids.export(["[PAD]", "B001", "B002"], path)
    assert json.loads(path.read_text()) == {"B001": [1, 2], "B002": [3, 0]}
    with pytest.raises(ValueError):
        semantic_ids.export(["[PAD]", "B001"], path)


# ---- collision policies -------------------------------------------------------------------------------------------
def test_append_digit_numbers_items_inside_their_collision_group():
    codes = torch.tensor([[1, 2], [1, 2], [0, 0], [1, 2], [0, 0], [5, 5]])
    new_codes, extra_vocab = append_digit(codes)
    assert new_codes[:, -1].tolist() == [0, 1, 0, 2, 1, 0]
    assert torch.equal(new_codes[:, :2], codes)
    assert extra_vocab == 3
    unique_codes, extra_vocab = append_digit(torch.tensor([[0, 1], [1, 0]]))
    assert unique_codes[:, -1].tolist() == [0, 0] and extra_vocab == 1


def test_keep_collisions_leaves_codes_alone():
    codes = torch.tensor([[1, 2], [1, 2]])
    new_codes, extra_vocab = keep_collisions(codes)
    assert torch.equal(new_codes, codes) and extra_vocab is None
    assert set(COLLISION_POLICIES) == {"append_digit", "none", "reassign_last_level"}


def test_reassign_last_level_keeps_the_nearest_and_moves_the_others():
    # items 0, 1, 2 share (0, 1); item 1 is nearest to code 1 and keeps it. Item 3 holds (0, 2).
    codes = torch.tensor([[0, 1], [0, 1], [0, 1], [0, 2], [1, 1]])
    distances = np.array([
        [5.0, 0.5, 0.9, 6.0],  # next nearest free code: 2 is taken by item 3, so 0
        [4.0, 0.1, 2.0, 3.0],  # keeps 1
        [9.0, 0.7, 0.8, 0.75],  # next nearest free code: 3
        [1.0, 1.0, 0.0, 1.0],
        [1.0, 0.0, 1.0, 1.0],
    ])
    new_codes, extra_vocab = reassign_last_level(codes, distances)
    assert extra_vocab is None
    assert new_codes[:, 1].tolist() == [0, 1, 3, 2, 1]
    assert len(torch.unique(new_codes, dim=0)) == 5
    with pytest.raises(ValueError, match="needs the distances"):
        reassign_last_level(codes, None)


# ---- quality ------------------------------------------------------------------------------------------------------
def test_quality_figures_on_hand_made_codes():
    codes = torch.tensor([[0, 0], [0, 0], [1, 0], [1, 1], [2, 1], [2, 1], [2, 1], [3, 2]])
    quality = sid_quality(codes, [4, 8])
    assert quality["n_items"] == 8
    assert quality["n_unique_ids"] == 5  # (0,0) (1,0) (1,1) (2,1) (3,2)
    assert quality["collision_rate"] == pytest.approx(5 / 8)  # (0,0) x2 and (2,1) x3
    assert quality["max_items_per_id"] == 3
    assert quality["usage"] == pytest.approx([4 / 4, 3 / 8])
    level1_probabilities = np.array([3, 4, 1]) / 8
    assert quality["perplexity"][1] == pytest.approx(math.exp(-(level1_probabilities * np.log(level1_probabilities)).sum()))
    assert quality["prefix2_max_share"] == pytest.approx(3 / 8)
    uniform = sid_quality(torch.arange(16)[:, None], [16])
    assert uniform["perplexity"][0] == pytest.approx(16.0)
    assert uniform["usage"][0] == 1.0 and uniform["collision_rate"] == 0.0
    assert "prefix2_max_share" not in uniform
    assert "5 distinct IDs" in format_quality(quality)


def test_collapse_warning_names_the_figure():
    collapsed_codes = torch.cat([torch.zeros(90, 2, dtype=torch.long), torch.arange(1, 11)[:, None].repeat(1, 2)])
    collapsed_codes = torch.cat([collapsed_codes, torch.arange(100)[:, None]], dim=1)  # IDs unique, prefixes not
    message = collapse_warning(sid_quality(collapsed_codes, [256, 256, 256]))
    assert message is not None and "90% of the items share their first two codes" in message
    assert "RQKMeans" in message and "first-level usage" not in message  # 11 of 100 usable codes
    few_first_codes = torch.stack([torch.arange(100) % 5, torch.arange(100) // 5, torch.zeros(100, dtype=torch.long)], 1)
    message = collapse_warning(sid_quality(few_first_codes, [256, 256, 256]))
    assert message is not None and "first-level usage is 5.0% (5 of 100 usable codes)" in message
    healthy = torch.stack([torch.arange(100) % 50, torch.arange(100) // 50, torch.zeros(100, dtype=torch.long)], 1)
    assert collapse_warning(sid_quality(healthy, [64, 64, 64])) is None
    # 90 of 100 items on one ID is a collapse in a 256^3 codebook; 100 items spread over a codebook of 4 IDs collide
    # as random codes would, without having collapsed
    colliding = torch.cat([torch.zeros(90, 3, dtype=torch.long), torch.arange(1, 11)[:, None].repeat(1, 3)])
    assert "90% of the items collide on their full code" in collapse_warning(sid_quality(colliding, [256, 256, 256]))
    spread = torch.stack([torch.arange(100) % 2, torch.arange(100) // 2 % 2, torch.zeros(100, dtype=torch.long)], 1)
    assert collapse_warning(sid_quality(spread, [2, 2, 1])) is None


def _spread_pairs(n_items, levels, size):
    """Codes where every ID holds two items and the IDs are spread evenly: collisions without any concentration."""
    ids = torch.arange(n_items) // 2
    return torch.stack([ids // size ** (levels - 1 - level) % size for level in range(levels)], 1)


def test_collapse_advice_fits_the_tokenizer():
    """Collisions with spread codes mean a codebook too small for the catalogue: residual k-means is told to grow
    it (never to use itself), an RQ-VAE also to train longer; concentrated codes of an RQ-VAE get the training
    advice (with RQKMeans as the alternative), those of RQ-KMeans a look at the item vectors."""
    quality = {**sid_quality(_spread_pairs(12_000, 3, 32), [32, 32, 32]), "tokenizer": "RQKMeans"}
    message = collapse_warning(quality)
    assert "100% of the items collide on their full code (32,768 codes for 12,000 items; uniformly random codes " \
           "would collide 31%)" in message
    assert "raise tokenizer_params.codebook_size (now 32x32x32; e.g. 128, or `auto`" in message
    assert "num_levels (now 3)" in message and "RQKMeans" not in message and "epochs" not in message
    message = collapse_warning({**quality, "tokenizer": "RQVAE"})
    assert "e.g. 128" in message and "train the tokenizer longer" in message and "RQKMeans" not in message
    concentrated = torch.cat([torch.zeros(90, 3, dtype=torch.long), torch.arange(1, 11)[:, None].repeat(1, 3)])
    rqvae = collapse_warning({**sid_quality(concentrated, [256, 256, 256]), "tokenizer": "RQVAE"})
    assert "dead_code_reset" in rqvae and "the RQKMeans tokenizer" in rqvae
    # an RQ-VAE whose codebooks already hold the catalogue: training, not size (a 2-epoch fit of 3 x 256 on beauty)
    pairs = torch.arange(12_000) // 2
    roomy = sid_quality(torch.stack([pairs % 256, pairs // 256, torch.zeros_like(pairs)], 1), [256, 256, 256])
    assert roomy["n_used"][0] == 256 and roomy["prefix2_max_share"] < 0.01  # spread, not concentrated
    message = collapse_warning({**roomy, "tokenizer": "RQVAE"})
    assert "100% of the items collide" in message and "more tokenizer epochs" in message
    assert "codebook_size" not in message
    rqkmeans = collapse_warning({**sid_quality(concentrated, [256, 256, 256]), "tokenizer": "RQKMeans"})
    assert "text_fields" in rqkmeans and "the RQKMeans tokenizer" not in rqkmeans


def test_auto_codebook_size_is_sized_to_the_catalogue(item_vectors):
    from recbole_genrec.tokenization import auto_codebook_size, resolve_auto_codebook_size, resolve_tokenizer_params

    # K^(L-1) >= n / 2, K a power of two >= 32: the quick profile's 3 levels keep 32 on ml-100k, 128 on amazon-beauty
    assert [auto_codebook_size(n, 3) for n in (287, 1682, 2048, 2049, 12_101, 100_000)] == [32, 32, 32, 64, 128, 256]
    assert auto_codebook_size(12_101, 4) == 32 and auto_codebook_size(100, 1) == 64
    assert resolve_tokenizer_params("RQKMeans", {"codebook_size": "auto"}, 12_101) == {"codebook_size": 128}
    assert resolve_tokenizer_params("RQVAE", {"num_levels": 4, "codebook_size": "auto"}, 12_101)["codebook_size"] == 32
    fixed = {"num_levels": 3, "codebook_size": 64}
    assert resolve_tokenizer_params("RQKMeans", fixed, 12_101) is fixed
    with pytest.raises(ValueError, match="no num_levels"):
        resolve_auto_codebook_size({"codebook_size": "auto"}, 100)
    assert resolve_tokenizer_params("HKMeans", {"codebook_size": "auto"}, 100) == {"codebook_size": "auto"}
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\) \['codebook_size'\] for tokenizer HKMeans"):
        build_tokenizer("HKMeans", {"codebook_size": "auto"})
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        build_tokenizer("RQKMeans", {"codebook_size": "big"})
    # a direct fit resolves it from the vectors' item count (the run resolves it earlier, in the dataset's build)
    tokenizer = build_tokenizer("RQKMeans", {"num_levels": 2, "codebook_size": "auto", "niter": 5})
    semantic_ids = tokenizer.fit(item_vectors, seed=1)
    assert tokenizer.params["codebook_size"] == 256 and semantic_ids.vocab_sizes[:2] == [256, 256]  # 2 K >= 300


def test_quick_profile_sizes_its_codebooks_with_auto():
    from recbole_genrec.cli import load_profile

    for model in ("TIGER", "LIGER", "LETTER"):
        assert load_profile(model)["tokenizer_params"]["codebook_size"] == "auto"


# ---- hierarchical balanced k-means (EAGER, ColaRec) ---------------------------------------------------------------
def test_hkmeans_tree_gives_unique_ids_in_the_fewest_levels(item_vectors):
    semantic_ids = build_tokenizer("HKMeans", {"branches": 8, "niter": 10, "collision": "none"}).fit(item_vectors, seed=3)
    codes = semantic_ids.codes[1:]
    assert codes.shape == (N_ITEMS, 3) and semantic_ids.vocab_sizes == [8, 8, 8]  # 8^2 < 300 <= 8^3
    assert len(torch.unique(codes, dim=0)) == N_ITEMS and codes.min() >= 0 and codes.max() < 8
    assert semantic_ids.quality["collision_rate"] == 0.0
    # balanced: no first-level cluster above ceil(300 / 8) items
    assert torch.bincount(codes[:, 0]).max() <= math.ceil(N_ITEMS / 8)
    # same seed, same tree
    again = build_tokenizer("HKMeans", {"branches": 8, "niter": 10, "collision": "none"}).fit(item_vectors, seed=3)
    assert torch.equal(again.codes, semantic_ids.codes)


def test_hkmeans_separates_identical_items_and_checks_fixed_levels():
    # 40 identical vectors (items without a CF signal) still get distinct leaves under a size-bounded tree
    vectors = np.vstack([np.zeros((41, 4)), np.random.default_rng(1).normal(size=(20, 4))]).astype(np.float32)
    codes = build_tokenizer("HKMeans", {"branches": 8, "collision": "none"}).fit(vectors, seed=1).codes[1:]
    assert len(torch.unique(codes, dim=0)) == 60 and torch.bincount(codes[:, 0]).max() <= math.ceil(60 / 8)
    for levels in (1, 3):  # too few cannot hold 60 items; more only add single-child levels
        with pytest.raises(ValueError, match=r"60 items with 8 branches need exactly 2 level\(s\)"):
            build_tokenizer("HKMeans", {"branches": 8, "num_levels": levels}).fit(vectors, seed=1)


def test_collapsed_codes_stop_the_run_and_stay_cached(tmp_path):
    from types import SimpleNamespace

    from recbole_genrec.data import fit_semantic_ids

    # 200 items with 3 distinct vectors: whatever the tokenizer, at most 3 distinct IDs in a 16^3 codebook
    vectors = np.repeat(np.random.default_rng(0).normal(size=(3, DIM)).astype(np.float32), [67, 67, 67], axis=0)[:201]
    config = {"tokenizer": "RQKMeans", "tokenizer_params": {**TINY_PARAMS["RQKMeans"], "collision": "none"},
              "device": "cpu", "seed": 1, "cache_dir": str(tmp_path), "dataset": "toy", "sid_collapse": "error"}
    dataset = SimpleNamespace(iid_field="item_id", field2id_token={"item_id": [f"i{n}" for n in range(201)]})
    with pytest.raises(ValueError, match=r"collapsed: .*collide on their full code.*sid_collapse: warn"):
        fit_semantic_ids(config, dataset, vectors)
    kept = fit_semantic_ids({**config, "sid_collapse": "warn"}, dataset, vectors)
    assert kept.fit_seconds == 0.0 and kept.n_items == 200  # loaded from the cache, not refitted


# ---- k-means ------------------------------------------------------------------------------------------------------
def test_kmeans_caps_k_and_is_deterministic():
    points = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    centroids, assignments = kmeans(points, 8, niter=10, seed=1)
    centroids_again, assignments_again = kmeans(points, 8, niter=10, seed=1)
    assert centroids.shape == (8, 4) and assignments.shape == (200,)
    assert np.array_equal(assignments, assignments_again) and np.allclose(centroids, centroids_again)
    few_centroids, few_assignments = kmeans(points[:3], 8, niter=10, seed=1)
    assert few_centroids.shape == (3, 4) and sorted(few_assignments.tolist()) == [0, 1, 2]


def test_balanced_kmeans_respects_the_size_limit():
    rng = np.random.default_rng(0)
    # one dense blob of 150 points and 50 scattered ones: plain k-means would give very unequal clusters
    points = np.vstack([rng.normal(scale=0.1, size=(150, 4)), rng.normal(scale=5.0, size=(50, 4))]).astype(np.float32)
    centroids, assignments = balanced_kmeans(points, 8, niter=10, seed=1)
    sizes = np.bincount(assignments, minlength=8)
    assert centroids.shape == (8, 4)
    assert sizes.sum() == 200 and sizes.max() <= math.ceil(200 / 8)
    assert np.array_equal(assignments, balanced_kmeans(points, 8, niter=10, seed=1)[1])
