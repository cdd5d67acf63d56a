"""The evaluator's cold-start split: test users whose target never occurs in the training split, scored apart."""
import pytest

from recbole_genrec.quick_start import run_recbole_genrec

# Leave-one-out: the last item of each user is the test target, the one before it the validation target, the rest
# (as targets and histories) is the training split. Training items: a, b, c (u1-u4), a, b, d (u5), b, d, a (u6),
# so {a, b, c, d}; e, f, x, y never occur in training. Test targets: e, f, x, y (cold users u1-u4), a and c
# (in-set users u5, u6).
HANDMADE = {
    "u1": "a b c d e",
    "u2": "a b c d f",
    "u3": "b c a e x",
    "u4": "c a b x y",
    "u5": "a b d c a",
    "u6": "b d a e c",
}


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    root = tmp_path_factory.mktemp("handmade-data")
    (root / "handmade").mkdir()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user, items in HANDMADE.items():
        lines += [f"{user}\t{item}\t{position}" for position, item in enumerate(items.split(), start=1)]
    (root / "handmade" / "handmade.inter").write_text("\n".join(lines) + "\n")
    return root


def test_cold_start_counts_and_metrics_on_a_handmade_split(handmade, tmp_path):
    result = run_recbole_genrec(model="SASRec", dataset="handmade", saved=False, config_dict={
        "data_path": str(handmade), "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "checkpoint_dir": str(tmp_path), "epochs": 1, "topk": [1, 3], "valid_metric": "NDCG@3",
        "MAX_ITEM_LIST_LENGTH": 5, "hidden_size": 8, "inner_size": 16, "n_layers": 1, "n_heads": 1,
        "train_batch_size": 4, "state": "WARNING",
    })
    cold = result["test_cold_start"]
    assert cold["cold_users"] == 4 and cold["inset_users"] == 2
    assert cold["cold_items"] == 4  # e, f, x, y
    assert 0 <= cold["cold_items_in_top3"] <= 4
    # The subsets partition the users, so the overall metric is their user-weighted mean.
    for metric in ("recall@1", "recall@3", "ndcg@3"):
        overall = result["test_result"][metric]
        weighted = (4 * cold[f"cold_{metric}"] + 2 * cold[f"inset_{metric}"]) / 6
        assert overall == pytest.approx(weighted, abs=2e-4)  # RecBole rounds each metric to 4 decimals
