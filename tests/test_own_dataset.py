"""An own Amazon-style dataset with no yaml: `.inter` with a timestamp and `.item` with title and categories under
--data_path run without load_col or text_fields (GenRecConfig._own_dataset_defaults)."""
import logging

import pytest

from recbole_genrec.config import GenRecConfig, default_text_fields
from recbole_genrec.quick_start import dry_run_recbole_genrec, run_recbole_genrec

from conftest import TINY_TIGER

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_USERS, N_ITEMS = 30, 40


@pytest.fixture(scope="module")
def own_dataset(tmp_path_factory):
    """<root>/shop/shop.inter (user, item, timestamp) and shop.item (title, categories, an id and two numbers)."""
    root = tmp_path_factory.mktemp("own")
    folder = root / "shop"
    folder.mkdir()
    rows = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(N_USERS):
        for step in range(6 + user % 4):
            rows.append(f"u{user}\ti{(user * 7 + step * 3) % N_ITEMS}\t{1000 + user * 50 + step}")
    (folder / "shop.inter").write_text("\n".join(rows) + "\n")
    kinds = ["Lotion", "Shampoo", "Serum", "Mascara", "Soap"]
    items = ["item_id:token\ttitle:token_seq\tcategories:token_seq\tvendor_id:token\tprice:float\tsales_rank:float"]
    for item in range(N_ITEMS):
        kind = kinds[item % len(kinds)]
        items.append(f"i{item}\t{kind} number {item} for daily care\t'Beauty', '{kind}s'\tv{item % 3}\t{item + 0.5}"
                     f"\t{item * 10}")
    (folder / "shop.item").write_text("\n".join(items) + "\n")
    return root


def _settings(root, workdir, **overrides):
    return {"data_path": str(root), "epochs": 1, "checkpoint_dir": str(workdir / "saved"),
            "cache_dir": str(workdir / "cache"), "MAX_ITEM_LIST_LENGTH": 10, "hidden_size": 32, "inner_size": 64,
            "gpu_id": "", "state": "INFO", "topk": [5], "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@5",
            **overrides}


def test_defaults_come_from_the_files(own_dataset, workdir):
    config = GenRecConfig(model="TIGER", dataset="shop", config_dict=_settings(own_dataset, workdir))
    assert config["load_col"]["inter"] == ["user_id", "item_id", "timestamp"]
    assert config["text_fields"] == ["title", "categories"]  # the usual names; not the id, not the numbers
    assert any("text_fields" in note for note in config.dataset_defaults)
    chosen = GenRecConfig(model="TIGER", dataset="shop",
                          config_dict=_settings(own_dataset, workdir, text_fields="title,vendor_id"))
    assert chosen["text_fields"] == ["title", "vendor_id"]  # --text_fields=a,b overrides, split at the commas
    assert not any("text_fields" in note for note in chosen.dataset_defaults)


def test_without_usual_names_every_text_field_but_ids(tmp_path):
    item_file = tmp_path / "x.item"
    item_file.write_text("item_id:token\tlabel:token_seq\tshop_id:token\tcolour:token\tweight:float\n")
    assert default_text_fields(str(item_file)) == ["label", "colour"]


def test_classic_model_trains_on_it(own_dataset, workdir):
    """SASRec's leave-one-out by time needs the timestamp that no load_col asked for."""
    result = run_recbole_genrec("SASRec", "shop", config_dict=_settings(own_dataset, workdir, state="WARNING"))
    assert 0 <= result["test_result"]["recall@5"] <= 1


def test_generative_model_embeds_the_default_text(own_dataset, workdir, caplog):
    caplog.set_level(logging.INFO)
    report = dry_run_recbole_genrec("TIGER", "shop", config_dict=_settings(own_dataset, workdir, **TINY_TIGER))
    assert report["items"] == N_ITEMS and report["semantic_id_levels"]
    logged = caplog.text
    assert "shop: text_fields: ['title', 'categories']" in logged and "time field 'timestamp'" in logged
