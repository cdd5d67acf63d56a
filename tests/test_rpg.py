"""RPG: OPQ tokenizer, exact scoring, graph-constrained decoding, end to end on the tiny fixture."""
import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recbole_genrec.inference import build_item_graph, graph_topk, random_start_items
from recbole_genrec.model.layers import DecoderOnly
from recbole_genrec.model.rpg import RPG, sequence_rows
from recbole_genrec.quick_start import prepare_run, run_recbole_genrec
from recbole_genrec.tokenization import TOKENIZERS, SemanticIds, build_tokenizer
from recbole_genrec.tokenization.opq import pca_whiten

TINY_RPG = {
    "d_model": 32, "num_heads": 2, "d_ff": 64, "num_layers": 1,
    "tokenizer_params": {"num_digits": 8, "codebook_size": 16, "collision": "none", "opq_niter": 10},
    "warmup_steps": 10, "learning_rate": 0.003, "num_beams": 10, "num_edges": 20, "propagation_steps": 2,
}


# ---- OPQ tokenizer ---------------------------------------------------------------------------------------------
def _clustered_vectors(n=300, d=32, seed=0):
    rng = np.random.RandomState(seed)
    centres = rng.randn(12, d)
    vectors = centres[rng.randint(0, 12, n + 1)] + 0.3 * rng.randn(n + 1, d)
    vectors[0] = 0.0
    return vectors.astype(np.float32)


def test_opq_codes_shape_range_padding_and_determinism():
    assert TOKENIZERS["OPQ"].__name__ == "OPQTokenizer"
    vectors = _clustered_vectors(d=30)  # 30 is not divisible by m = 4: zero-padded to 32
    fit_mask = np.ones(len(vectors), dtype=bool)
    fit_mask[0] = False
    fit_mask[250:] = False  # fit on a subset; every item is still coded
    params = {"num_digits": 4, "codebook_size": 16, "opq_niter": 10}
    tokenizer = build_tokenizer("OPQ", params)
    ids = tokenizer.fit(vectors, fit_mask=fit_mask, seed=7)
    assert ids.codes.shape == (301, 4) and ids.codes.dtype == torch.long
    assert torch.all(ids.codes[0] == 0)
    assert ids.codes.min() >= 0 and ids.codes.max() < 16
    assert ids.vocab_sizes == [16] * 4  # collision policy 'none': no appended digit
    assert ids.quality["n_fit_items"] == 249
    assert tokenizer.fit_report["padded_dims"] == 2
    assert tokenizer.codebooks.shape == (4, 16, 8)
    # every digit uses several codes, and items of the same cluster tend to share codes (it learned something)
    assert all(len(torch.unique(ids.codes[1:, level])) >= 8 for level in range(4))
    again = build_tokenizer("OPQ", params).fit(vectors, fit_mask=fit_mask, seed=7)
    assert torch.equal(ids.codes, again.codes)


@pytest.mark.parametrize("metric", ["inner_product", "l2"])
def test_opq_codes_are_nearest_codebook_entries(metric):
    """The unpacked faiss codes are the nearest per-digit centroid of the rotated vector minus IVF1's centroid: the
    mean of the fit items under l2, that mean's direction at length 1 under the inner product (spherical k-means,
    the official METRIC_INNER_PRODUCT)."""
    vectors = _clustered_vectors(n=200, d=16, seed=1) + 2.0  # away from the origin: the two centroids differ
    vectors[0] = 0.0
    tokenizer = build_tokenizer("OPQ", {"num_digits": 4, "codebook_size": 16, "opq_niter": 5, "metric": metric})
    ids = tokenizer.fit(vectors, seed=3)
    assert tokenizer.fit_report["metric"] == metric
    rotated = vectors[1:] @ tokenizer.rotation.T
    mean = rotated.mean(0)
    expected = mean / np.linalg.norm(mean) if metric == "inner_product" else mean
    assert np.allclose(tokenizer.coarse_centroid, expected, atol=1e-3)
    sub = (rotated - tokenizer.coarse_centroid).reshape(len(rotated), 4, 4)
    distances = ((sub[:, :, None, :] - tokenizer.codebooks[None]) ** 2).sum(-1)  # [n, m, K]
    assert (distances.argmin(-1) == ids.codes[1:].numpy()).mean() > 0.97  # equal up to float error


def test_pca_whiten_gives_identity_covariance_like_sklearn():
    """Official: sklearn PCA(n_components, whiten=True). Fit rows come out centred with identity covariance."""
    rng = np.random.RandomState(0)
    x = (rng.randn(400, 12) @ rng.randn(12, 12) * np.linspace(0.1, 5, 12) + 3.0).astype(np.float32)
    y = pca_whiten(x, 6)
    assert y.shape == (400, 6) and y.dtype == np.float32
    assert np.allclose(y.mean(0), 0.0, atol=1e-4)
    assert np.allclose(np.cov(y.T), np.eye(6), atol=1e-4)  # denominator n - 1, as sklearn
    sklearn = pytest.importorskip("sklearn.decomposition")
    reference = sklearn.PCA(n_components=6, whiten=True, svd_solver="full").fit_transform(x)
    assert np.allclose(np.abs(y), np.abs(reference), atol=1e-3)  # the same up to each axis' sign
    # fitted on a subset: those rows are white, every row is transformed
    mask = np.zeros(400, dtype=bool)
    mask[:150] = True
    sub = pca_whiten(x, 6, mask)
    assert sub.shape == (400, 6) and np.allclose(np.cov(sub[mask].T), np.eye(6), atol=1e-4)
    assert np.array_equal(pca_whiten(x, 6, mask), sub)  # deterministic (signs fixed)
    with pytest.raises(ValueError, match="pca_whiten_dim"):
        pca_whiten(x, 13)
    with pytest.raises(ValueError, match="pca_whiten_dim"):
        pca_whiten(x[:5], 5)


@pytest.mark.parametrize("pca_fit_on", ["all", "fit"])
def test_opq_with_whitening_and_inner_product_runs(pca_fit_on):
    vectors = _clustered_vectors(n=300, d=32, seed=2)
    fit_mask = np.ones(len(vectors), dtype=bool)
    fit_mask[0] = False
    fit_mask[200:] = False
    params = {"num_digits": 4, "codebook_size": 16, "opq_niter": 5, "pca_whiten_dim": 16, "pca_fit_on": pca_fit_on,
              "metric": "inner_product"}
    tokenizer = build_tokenizer("OPQ", params)
    ids = tokenizer.fit(vectors, fit_mask=fit_mask, seed=3)
    assert tokenizer.fit_report["input_dim"] == 16 and tokenizer.fit_report["pca_fit_on"] == pca_fit_on
    assert tokenizer.rotation.shape == (16, 16) and tokenizer.codebooks.shape == (4, 16, 4)
    assert ids.codes.shape == (301, 4) and all(len(torch.unique(ids.codes[1:, d])) >= 8 for d in range(4))
    with pytest.raises(ValueError, match="metric"):
        build_tokenizer("OPQ", {**params, "metric": "cosine"}).fit(vectors, fit_mask=fit_mask)
    with pytest.raises(ValueError, match="pca_fit_on"):
        build_tokenizer("OPQ", {**params, "pca_fit_on": "train"}).fit(vectors, fit_mask=fit_mask)


def test_rpg_yaml_has_the_official_tokenizer_and_loss():
    import yaml

    from recbole_genrec.paths import PROPERTIES_DIR

    with open(f"{PROPERTIES_DIR}/model/RPG.yaml") as handle:
        values = yaml.safe_load(handle)
    params = values["tokenizer_params"]
    assert params["pca_whiten_dim"] == 128 and params["pca_fit_on"] == "all"
    assert params["metric"] == "inner_product" and params["standardize"] is False
    assert values["rpg_all_positions"] is True and values["resid_dropout"] == 0.0
    assert values["weight_decay"] == 0.0 and values["warmup_steps"] == 10000
    assert set(params) - {"collision"} <= set(TOKENIZERS["OPQ"].default_params)


def test_opq_too_few_fit_items_names_codebook_size():
    vectors = _clustered_vectors(n=100, d=16)
    with pytest.raises(ValueError, match="codebook_size"):
        build_tokenizer("OPQ", {"num_digits": 4, "codebook_size": 256}).fit(vectors)


# ---- a tiny RPG without a dataset ------------------------------------------------------------------------------
class _Config(dict):
    def __getitem__(self, key):
        return self.get(key)


def _tiny_model(n_items=12, m=3, k=5, inference="exact", num_edges=None, seed=0):
    """RPG on a fake dataset: random codes, random weights. Only the fields RPG's constructor reads."""
    torch.manual_seed(seed)
    codes = torch.cat([torch.zeros(1, m, dtype=torch.long), torch.randint(0, k, (n_items, m))])
    dataset = SimpleNamespace(semantic_ids=SemanticIds(codes=codes, vocab_sizes=[k] * m))
    model = RPG.__new__(RPG)
    torch.nn.Module.__init__(model)
    # the parts of SequentialRecommender/GenerativeRecommender.__init__ RPG relies on
    model.ITEM_SEQ, model.ITEM_SEQ_LEN, model.POS_ITEM_ID, model.ITEM_ID = "seq", "len", "pos", "item"
    model.max_seq_length, model.n_items = 6, n_items + 1
    model.semantic_ids = dataset.semantic_ids
    model.register_buffer("item_codes", codes)
    model.vocab_sizes, model.n_levels, model.beam_size = [k] * m, m, 10
    config = _Config(
        d_model=16, num_heads=2, d_ff=32, num_layers=1, embd_dropout=0.0, attn_dropout=0.0, resid_dropout=0.0,
        layer_norm_eps=1e-12,
        num_head_layers=1, rpg_temperature=0.5, rpg_inference=inference, num_beams=3,
        num_edges=num_edges or n_items - 1, propagation_steps=2, graph_chunk_size=5, score_chunk_size=4, seed=1,
    )
    RPG._init_rpg(model, config)
    return model.eval()


def _batch(model, batch_size=2):
    seq = torch.tensor([[3, 5, 1, 0, 0, 0], [7, 2, 9, 4, 11, 0]])[:batch_size]
    return {"seq": seq, "len": (seq != 0).sum(1), "pos": torch.tensor([6, 8])[:batch_size]}


def test_exact_scores_equal_brute_force():
    model = _tiny_model()
    batch = _batch(model)
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        log_probs = torch.log_softmax(model.digit_logits(batch), dim=-1)
    assert scores.shape == (2, 13)
    assert torch.all(torch.isinf(scores[:, 0]))
    for b in range(2):
        for item in (1, 4, 7, 12):
            expected = sum(log_probs[b, d, model.item_codes[item, d]].item() for d in range(3)) / 3
            assert math.isclose(scores[b, item].item(), expected, rel_tol=1e-5, abs_tol=1e-6)
    # the per-digit distributions are proper: an item's score is a mean of log-probabilities
    assert torch.all(scores[:, 1:] <= 0)
    # validation ranks by these scores, and so does the test with rpg_inference: exact
    top_scores, top_items = scores.topk(5, dim=1)
    for rank in (model.selection_topk, model.generate_topk):
        items, ranked_scores = rank(batch, 5)
        assert torch.equal(items, top_items) and torch.equal(ranked_scores, top_scores)


def test_loss_is_mean_digit_cross_entropy_and_trains():
    model = _tiny_model()
    model.train()
    batch = _batch(model)
    loss = model.calculate_loss(batch)
    logits = model.digit_logits(batch)
    target = model.item_codes[batch["pos"]]
    manual = sum(torch.nn.functional.cross_entropy(logits[:, d], target[:, d]) for d in range(3)) / 3
    assert torch.allclose(loss, manual, atol=1e-5)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    first = loss.item()
    for _ in range(30):
        optimiser.zero_grad()
        model.calculate_loss(batch).backward()
        optimiser.step()
    assert model.calculate_loss(batch).item() < first * 0.5


def _prefix_rows(sequence, width):
    """RecBole's augmentation of one user's items: (history right-padded to `width`, length, target) per target."""
    rows = []
    for t in range(1, len(sequence)):
        history = sequence[max(0, t - width):t]
        rows.append((history + [0] * (width - len(history)), len(history), sequence[t]))
    return rows


def _terms(seq, scored, labels):
    """The (history, target) pairs a batch's loss is made of: per scored position t of row b, items 0..t, label."""
    return sorted((tuple(seq[b, :t + 1].tolist()), int(labels[b, t])) for b, t in scored.nonzero().tolist())


def test_sequence_loss_is_the_mean_of_the_prefix_row_losses():
    """rpg_all_positions: a user's row of fewer than T items is scored at every position, a full row (T items) at
    its last; the batch's loss is the MEAN of the per-row losses of the prefix rows it replaces (their sum / number
    of targets), in eval mode (no dropout)."""
    model = _tiny_model()  # T = 6, eval mode, dropouts 0
    width = model.max_seq_length
    short_user, long_user = [3, 5, 1, 7, 2, 9], [4, 6, 8, 10, 11, 12, 1, 5]  # 5 and 7 targets
    prefix = _prefix_rows(short_user, width) + _prefix_rows(long_user, width)
    # what sequence_rows keeps: each user's longest row under T items (all positions), the long user's full rows
    sequence = [prefix[4], prefix[9], prefix[10], prefix[11]]
    assert [row[1] for row in sequence] == [5, 5, 6, 6] and len(prefix) == 12

    def batch(rows):
        return {"seq": torch.tensor([r[0] for r in rows]), "len": torch.tensor([r[1] for r in rows]),
                "pos": torch.tensor([r[2] for r in rows])}

    with torch.no_grad():
        model.all_positions = False
        row_losses = torch.stack([model.calculate_loss(batch([row])) for row in prefix])
        model.all_positions = True
        loss = model.calculate_loss(batch(sequence))
        scored, labels = model.loss_positions(batch(sequence)["seq"], batch(sequence)["len"], batch(sequence)["pos"])
        assert scored.sum(1).tolist() == [5, 5, 1, 1]  # every position of a row under T items, a full row's last
        assert torch.allclose(loss, row_losses.mean(), atol=1e-5)
        assert torch.allclose(loss * len(prefix), row_losses.sum(), atol=1e-4)
        # the same terms, one each
        full = batch(prefix)
        got = _terms(batch(sequence)["seq"], scored, labels)
        assert got == sorted((tuple(r[0][:r[1]]), r[2]) for r in prefix)
        # the one-target path on the same prefix batch is their mean as well
        model.all_positions = False
        assert torch.allclose(model.calculate_loss(full), row_losses.mean(), atol=1e-5)
    model.train()
    model.all_positions = True
    model.calculate_loss(batch(sequence)).backward()  # trains through the all-position path
    assert model.digit_embedding.weight.grad is not None


def test_sequence_rows_keeps_each_sequence_once():
    rng = np.random.RandomState(0)
    width, users, lists, lengths, targets = 5, [], [], [], []
    for user in range(1, 30):
        sequence = rng.randint(1, 40, rng.randint(2, 14)).tolist()  # repeats allowed; some longer than the width
        for history, length, target in _prefix_rows(sequence, width):
            users.append(user), lists.append(history), lengths.append(length), targets.append(target)
    order = rng.permutation(len(users))  # any row order
    users, lists, lengths, targets = (np.asarray(a)[order] for a in (users, lists, lengths, targets))
    keep = sequence_rows(users, lists, lengths, targets)
    model = _tiny_model()
    scored, labels = model.loss_positions(torch.as_tensor(lists[keep]), torch.as_tensor(lengths[keep]),
                                          torch.as_tensor(targets[keep]))
    got = _terms(torch.as_tensor(lists[keep]), scored, labels)
    assert got == sorted((tuple(h[:n]), int(t)) for h, n, t in zip(lists.tolist(), lengths, targets))
    assert len(keep) == len(set(users.tolist())) + int((lengths == width).sum())
    # a missing prefix (or a row that is not one) is refused instead of adding or losing targets
    missing = np.flatnonzero((lengths == 2) & (users == users[lengths == 3][0]))
    rest = np.setdiff1d(np.arange(len(users)), missing)
    with pytest.raises(ValueError, match="rpg_all_positions"):
        sequence_rows(users[rest], lists[rest], lengths[rest], targets[rest])
    changed = targets.copy()
    changed[next(i for i in np.flatnonzero(lengths == 1) if ((users == users[i]) & (lengths == 2)).any())] += 1
    with pytest.raises(ValueError, match="rpg_all_positions"):
        sequence_rows(users, lists, lengths, changed)


def test_rpg_training_split_holds_the_prefix_rows_targets(tiny):
    """On the tiny fixture, through RecBole: the reduced training split carries exactly the (history, target) terms
    of RecBole's training prefix rows (the augmented rows minus the validation and test rows), each once, and the
    same training items."""
    from recbole_genrec.data import train_item_mask

    config, dataset, model, train_data, valid_data, test_data = prepare_run("RPG", "tiny-beauty", None,
                                                                            tiny(**TINY_RPG))
    assert config["rpg_all_positions"] and model.all_positions
    split = train_data._dataset
    iid = config["ITEM_ID_FIELD"]
    list_field, length_field = iid + config["LIST_SUFFIX"], config["ITEM_LIST_LENGTH_FIELD"]

    def rows(inter):
        return Counter((tuple(h[:n]), t) for h, n, t in zip(inter[list_field].tolist(), inter[length_field].tolist(),
                                                             inter[iid].tolist()))

    # the prefix rows RecBole's split gave training: every augmented row but the validation and test rows
    expected = rows(dataset.inter_feat) - rows(valid_data._dataset.inter_feat) - rows(test_data._dataset.inter_feat)
    expected = sorted(expected.elements())
    assert split.prefix_rows == len(expected) > len(split)
    inter = split.inter_feat
    scored, labels = model.loss_positions(inter[list_field], inter[length_field], inter[iid])
    assert _terms(inter[list_field], scored, labels) == expected
    assert (inter[length_field] == config["MAX_ITEM_LIST_LENGTH"]).any()  # windows of long users are exercised
    full_mask = np.zeros(dataset.item_num, dtype=bool)
    for history, target in expected:
        full_mask[list(history) + [target]] = True
    assert np.array_equal(train_item_mask(split), full_mask)
    batch = next(iter(train_data))
    assert torch.isfinite(model.calculate_loss(batch))


def test_graph_matches_brute_force_similarity():
    torch.manual_seed(0)
    embeddings = torch.randn(3, 5, 8)
    codes = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.randint(0, 5, (20, 3))])
    graph = build_item_graph(embeddings, codes, num_edges=4, chunk_size=7)
    assert graph.shape == (21, 4)
    unit = torch.nn.functional.normalize(embeddings, dim=-1)
    for item in (1, 9, 20):
        sims = torch.tensor([
            -float("inf") if other in (0, item) else
            sum(float(unit[d, codes[item, d]] @ unit[d, codes[other, d]]) for d in range(3)) / 3
            for other in range(21)
        ])
        assert set(graph[item].tolist()) <= set(range(1, 21)) - {item}
        # the chosen neighbours are as similar as the brute-force top 4 (ties may pick different items)
        assert torch.allclose(sims[graph[item]].sort().values, sims.topk(4).values.sort().values, atol=1e-5)


def test_graph_build_memory_is_bounded_by_its_block_not_the_catalogue(monkeypatch):
    from recbole_genrec.inference import graph_decoding

    # at 10^6 items a chunk holds 16 rows (16 x 10^6 similarities), not the 2,048 x 10^6 of an unbounded chunk
    rows = graph_decoding.graph_chunk_rows(10 ** 6, 2048)
    assert rows == 16 and rows * (10 ** 6 + 1) <= graph_decoding.GRAPH_BLOCK_ELEMENTS
    assert graph_decoding.graph_chunk_rows(1682, 2048) == 2048
    torch.manual_seed(0)
    embeddings = torch.randn(3, 5, 8)
    codes = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.randint(0, 5, (20, 3))])
    unbounded = build_item_graph(embeddings, codes, num_edges=4, chunk_size=64)
    shapes = []
    topk = torch.Tensor.topk

    def recording_topk(self, *args, **kwargs):
        shapes.append(tuple(self.shape))
        return topk(self, *args, **kwargs)

    monkeypatch.setattr(graph_decoding, "GRAPH_BLOCK_ELEMENTS", 3 * 21)  # 3 items per chunk of 21 columns
    monkeypatch.setattr(torch.Tensor, "topk", recording_topk)
    bounded = build_item_graph(embeddings, codes, num_edges=4, chunk_size=64)
    assert shapes and max(r * c for r, c in shapes) <= 3 * 21 and sum(r for r, _ in shapes) == 20
    unit = torch.nn.functional.normalize(embeddings, dim=-1)
    similarity = torch.einsum("ndk,mdk->nm", unit[torch.arange(3), codes], unit[torch.arange(3), codes]) / 3
    for item in range(1, 21):  # the same neighbour similarities (ties may pick different items)
        assert torch.allclose(similarity[item, bounded[item]].sort().values,
                              similarity[item, unbounded[item]].sort().values, atol=1e-6)


def test_graph_decoding_finds_exact_top1_on_complete_graph_and_returns_valid_items():
    model = _tiny_model(inference="graph")
    batch = _batch(model)
    with torch.no_grad():
        exact = model.full_sort_predict(batch)
        items, scores = model.generate_topk(batch, 5)
    assert items.shape == (2, 5)
    for row in range(2):
        assert len(set(items[row].tolist())) == 5
        assert all(1 <= item <= 12 for item in items[row].tolist())
        assert items[row, 0].item() == exact[row].argmax().item()
        assert torch.allclose(scores[row], exact[row, items[row]])
        assert torch.all(scores[row, :-1] >= scores[row, 1:])


def test_graph_topk_pads_with_minus_one_when_few_items_reachable():
    # 4 items, every item's only neighbour is the next one: from item 1, two steps reach items 1-3
    neighbours = torch.tensor([[0], [2], [3], [4], [1]])
    score = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4])
    items, scores = graph_topk(lambda c: score[c], neighbours, torch.tensor([[1]]), k=6, num_beams=1,
                               propagation_steps=2)
    assert items.tolist() == [[3, 2, -1, -1, -1, -1]]
    assert math.isclose(scores[0, 0].item(), 0.3, rel_tol=1e-6)
    start = random_start_items(3, 10, 4, seed=5, device="cpu")
    assert start.shape == (3, 4) and start.min() >= 1 and start.max() <= 10
    assert all(len(set(row)) == 4 for row in start.tolist())
    assert torch.equal(start, random_start_items(3, 10, 4, seed=5, device="cpu"))


def test_random_start_items_are_a_uniform_sample_without_replacement():
    """Distinct items of 1..N per row (never the padding item 0), uniform over items and over positions, S =
    min(num_beams, N); repeatable by seed, row i the same for any batch size; nothing of the catalogue's size is
    drawn (a catalogue of 10^9 items costs what 10 do)."""
    n_items, beams, rows = 12, 4, 30_000
    start = random_start_items(rows, n_items, beams, seed=3, device="cpu")
    assert start.shape == (rows, beams) and start.dtype == torch.long
    assert start.min() >= 1 and start.max() <= n_items
    assert (start.sort(dim=1).values.diff(dim=1) > 0).all()  # distinct within every row
    expected = rows * beams / n_items  # every item equally often: in a row with probability beams / N
    counts = torch.bincount(start.flatten(), minlength=n_items + 1)
    assert counts[0] == 0 and ((counts[1:] - expected).abs() < 0.05 * expected).all()
    for position in range(beams):  # every position uniform over the items too (a random order, not Floyd's)
        column = torch.bincount(start[:, position], minlength=n_items + 1)[1:]
        assert ((column - rows / n_items).abs() < 0.1 * rows / n_items).all()
    pairs = Counter(map(tuple, start[:, :2].tolist()))  # ordered pairs of distinct items, all equally likely
    assert len(pairs) == n_items * (n_items - 1)
    assert max(pairs.values()) < 1.3 * rows / len(pairs) and min(pairs.values()) > 0.7 * rows / len(pairs)
    assert torch.equal(start[:7], random_start_items(7, n_items, beams, seed=3, device="cpu"))
    assert not torch.equal(start[:7], random_start_items(7, n_items, beams, seed=4, device="cpu"))
    whole = random_start_items(5, 6, 10, seed=0, device="cpu")  # more beams than items: every item once
    assert whole.shape == (5, 6) and (whole.sort(dim=1).values == torch.arange(1, 7)).all()
    huge = random_start_items(4, 10 ** 9, 20, seed=0, device="cpu")
    assert huge.min() >= 1 and huge.max() <= 10 ** 9 and all(len(set(row)) == 20 for row in huge.tolist())


def test_decoder_only_is_causal():
    torch.manual_seed(0)
    backbone = DecoderOnly(d_model=16, num_heads=2, d_ff=32, num_layers=2, max_positions=8).eval()
    x = torch.randn(1, 6, 16)
    changed = x.clone()
    changed[0, 4:] = torch.randn(2, 16)
    with torch.no_grad():
        a, b = backbone(x), backbone(changed)
    assert torch.allclose(a[0, :4], b[0, :4], atol=1e-5)
    assert not torch.allclose(a[0, 4:], b[0, 4:], atol=1e-3)


# ---- end to end ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, test_decoder",
                         [({}, "_graph_topk"), ({"rpg_inference": "exact"}, "full_sort_predict")])
def test_validation_scores_exactly_and_the_test_decodes_by_rpg_inference(tiny, overrides, test_decoder):
    """As the official pipeline: checkpoints are selected on exact scoring, the best one is tested with
    graph-constrained decoding (RPG.yaml's default) or, with rpg_inference: exact, exact scoring again."""
    from recbole_genrec.registry import get_trainer

    config, _, model, _, valid_data, test_data = prepare_run("RPG", "tiny-beauty", None,
                                                             tiny(**TINY_RPG, **overrides))
    assert config["rpg_inference"] == overrides.get("rpg_inference", "graph")
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    calls = []
    for name in ("_graph_topk", "full_sort_predict"):
        original = getattr(model, name)
        setattr(model, name, lambda *args, _name=name, _original=original: calls.append(_name) or _original(*args))
    trainer._valid_epoch(valid_data)
    assert set(calls) == {"full_sort_predict"}
    calls.clear()
    trainer.evaluate(test_data, load_best_model=False)
    assert set(calls) == {test_decoder}


@pytest.mark.parametrize("inference", ["exact", "graph"])
def test_rpg_one_epoch_end_to_end(tiny, inference):
    result = run_recbole_genrec("RPG", "tiny-beauty", config_dict=tiny(**TINY_RPG, rpg_inference=inference))
    metrics = result["test_result"]
    assert set(metrics) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    quality = result["semantic_id_quality"]
    assert quality["n_items"] == 287 and quality["tokenizer"] == "OPQ"
    assert quality["vocab_sizes_after_policy"] == [16] * 8


def test_backbone_is_hf_gpt2_as_the_official_config_builds_it():
    """DecoderOnly with GPT-2's weights gives HF GPT2Model's hidden states (the official RPG builds a GPT2Config with
    activation gelu_new and layer_norm_epsilon 1e-12), and its init draws the residual projections at
    0.02 / sqrt(2 x layers) as GPT-2's."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    layers, d = 2, 32
    ours = DecoderOnly(d_model=d, num_heads=4, d_ff=64, num_layers=layers, max_positions=8, embd_dropout=0.0,
                       attn_dropout=0.0, resid_dropout=0.0, layer_norm_eps=1e-12).eval()
    config = transformers.GPT2Config(n_embd=d, n_head=4, n_inner=64, n_layer=layers, n_positions=8, vocab_size=3,
                                     activation_function="gelu_new", layer_norm_epsilon=1e-12, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2Model(config).eval()
    with torch.no_grad():
        hf.wpe.weight.copy_(ours.position.weight)
        for block, theirs in zip(ours.blocks, hf.h):
            pairs = [(block.ln_1, theirs.ln_1), (block.ln_2, theirs.ln_2)]
            for mine, other in pairs:
                other.weight.copy_(mine.weight)
                other.bias.copy_(mine.bias)
            for mine, other in [(block.attn.qkv, theirs.attn.c_attn), (block.attn.proj, theirs.attn.c_proj),
                                (block.mlp[0], theirs.mlp.c_fc), (block.mlp[2], theirs.mlp.c_proj)]:
                other.weight.copy_(mine.weight.T)  # HF's Conv1D stores [in, out]
                other.bias.copy_(mine.bias)
        hf.ln_f.weight.copy_(ours.ln_f.weight)
        hf.ln_f.bias.copy_(ours.ln_f.bias)
        inputs = torch.randn(3, 6, d)
        expected = hf(inputs_embeds=inputs).last_hidden_state
        assert torch.allclose(ours(inputs), expected, atol=1e-5)

    torch.manual_seed(0)
    wide = DecoderOnly(d_model=256, num_heads=4, d_ff=1024, num_layers=8)
    residual = 0.02 / math.sqrt(2 * 8)
    assert abs(wide.blocks[0].attn.proj.weight.std().item() - residual) < 0.1 * residual
    assert abs(wide.blocks[0].mlp[2].weight.std().item() - residual) < 0.1 * residual
    assert abs(wide.blocks[0].attn.qkv.weight.std().item() - 0.02) < 0.002
