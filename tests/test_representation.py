"""Stage 1: item text from the raw .item file, sentence embeddings with the offline MiniLM encoder, cache."""
import os

import numpy as np
import pytest

from recbole_genrec.config import GenRecConfig
from recbole_genrec.data import create_dataset
from recbole_genrec.representation import item_text_embeddings, read_item_text

from conftest import FIXTURES

ITEM_FILE = os.path.join(FIXTURES, "tiny-beauty", "tiny-beauty.item")


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_item_text_is_aligned_to_internal_ids_and_missing_items_are_empty():
    tokens = ["[PAD]", "B000052YM7", "NOT-AN-ITEM"]
    texts = read_item_text(ITEM_FILE, ["title", "brand"], tokens)
    assert texts[0] == "" and texts[2] == ""
    assert texts[1].startswith("title: ") and "brand: " in texts[1]


def test_missing_text_field_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"\['description'\].*text_fields"):
        read_item_text(ITEM_FILE, ["title", "description"], ["[PAD]"])


def test_empty_and_malformed_item_files_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        read_item_text(_write(tmp_path / "e.item", ""), ["title"], ["[PAD]"])
    bad = _write(tmp_path / "m.item", "item_id:token\ttitle:token_seq\nA\tx\textra\n")
    with pytest.raises(ValueError, match="Malformed line 2"):
        read_item_text(bad, ["title"], ["[PAD]", "A"])
    with pytest.raises(FileNotFoundError, match="text_fields|fields"):
        read_item_text(str(tmp_path / "absent.item"), ["title"], ["[PAD]"])


def test_item_file_matching_too_few_items_is_an_error(tiny, tmp_path):
    # another dataset's item file: most items would be embedded as empty text, collapsing their IDs
    folder = tmp_path / "tiny-beauty"
    folder.mkdir()
    (folder / "tiny-beauty.inter").write_text(open(os.path.join(FIXTURES, "tiny-beauty", "tiny-beauty.inter")).read())
    (folder / "tiny-beauty.item").write_text("item_id:token\ttitle:token_seq\nX1\tsome title\n")
    config = GenRecConfig(model="SASRec", dataset="tiny-beauty",
                          config_dict=tiny(data_path=str(tmp_path), cache_dir=str(tmp_path / "cache"),
                                           text_fields=["title"]))
    with pytest.raises(ValueError, match=r"287 of 287 items have no text in \['title'\].*item_id column"):
        item_text_embeddings(config, create_dataset(config))


def test_text_embeddings_shape_padding_and_cache(tiny, tmp_path):
    config = GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(cache_dir=str(tmp_path)))
    dataset = create_dataset(config)
    vectors = item_text_embeddings(config, dataset)
    assert vectors.shape == (dataset.item_num, 384) and vectors.dtype == np.float32
    assert np.all(vectors[0] == 0) and np.all(np.linalg.norm(vectors[1:], axis=1) > 0.1)
    (cache_file,) = [os.path.join(root, f) for root, _, files in os.walk(tmp_path) for f in files if f.endswith(".npy")]
    stamp = os.stat(cache_file).st_mtime_ns
    again = item_text_embeddings(config, dataset)
    assert np.array_equal(vectors, again) and os.stat(cache_file).st_mtime_ns == stamp  # read, not recomputed
    # Titles of similar products are closer than unrelated ones: a real encoder, not noise.
    normed = vectors[1:] / np.linalg.norm(vectors[1:], axis=1, keepdims=True)
    similarity = normed @ normed.T
    assert similarity.mean() < np.sort(similarity, axis=1)[:, -2].mean()


def test_shipped_embeddings_beside_the_dataset_are_used(tiny, tmp_path):
    """`<data_path>/<dataset>/cache/` holds artefacts shipped with a dataset (e.g. text embeddings for a GPU host
    without the encoder): they are read, and nothing is written to the run's cache."""
    import shutil

    first = tmp_path / "first"
    config = GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(cache_dir=str(first)))
    dataset = create_dataset(config)
    vectors = item_text_embeddings(config, dataset)
    (computed,) = [os.path.join(root, f) for root, _, files in os.walk(first) for f in files if f.endswith(".npy")]
    data_path = tmp_path / "data"
    shutil.copytree(os.path.join(FIXTURES, "tiny-beauty"), data_path / "tiny-beauty")
    os.makedirs(data_path / "tiny-beauty" / "cache")
    shutil.copy(computed, data_path / "tiny-beauty" / "cache")
    second = tmp_path / "second"
    config = GenRecConfig(model="SASRec", dataset="tiny-beauty",
                          config_dict=tiny(cache_dir=str(second), data_path=str(data_path)))
    assert np.array_equal(item_text_embeddings(config, create_dataset(config)), vectors)
    assert not second.exists()


def test_lightgcn_cf_embeddings_come_from_the_training_graph_only(tiny, tmp_path):
    from recbole_genrec.data import data_preparation
    from recbole_genrec.representation import item_cf_embeddings

    config = GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(
        cache_dir=str(tmp_path), cf_params={"model": "LightGCN", "embedding_size": 16, "epochs": 2}))
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    embeddings = item_cf_embeddings(config, dataset, train_data._dataset)
    trained = np.zeros(dataset.item_num, dtype=bool)
    trained[train_data._dataset.inter_feat["item_id"].numpy()] = True
    trained[np.unique(train_data._dataset.inter_feat["item_id_list"].numpy())] = True
    trained[0] = False
    assert embeddings.shape == (dataset.item_num, 16)
    assert np.all(embeddings[~trained] == 0) and np.all(np.linalg.norm(embeddings[trained], axis=1) > 0)
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['hidden_size'\] in `cf_params` for LightGCN"):
        item_cf_embeddings(GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(
            cf_params={"model": "LightGCN", "hidden_size": 16})), dataset, train_data._dataset)
