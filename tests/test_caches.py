"""The cache (cache.py): every file is checked on load against its sidecar and the caller's expectations; a bad
file in `cache_dir` is reported with its path and rebuilt, a bad shipped artefact is refused, nothing is written
before it is checked, and writes are atomic."""
import glob
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recbole_genrec.cache import ITEM_ARRAYS, ArtifactCache, CacheFileError
from recbole_genrec.config import GenRecConfig
from recbole_genrec.data import create_dataset, fit_semantic_ids
from recbole_genrec.representation import item_text_embeddings

from conftest import FIXTURES, ROOT

RQKMEANS = {"num_levels": 2, "codebook_size": 16, "niter": 5, "collision": "append_digit"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def text_cache(tiny, tmp_path_factory):
    """The tiny-beauty text embeddings computed once: (vectors, the cache file's path)."""
    cache_dir = tmp_path_factory.mktemp("text-cache")
    vectors = item_text_embeddings(*_text_config(tiny, cache_dir))
    (path,) = glob.glob(str(cache_dir / "tiny-beauty" / "text-*.npy"))
    return vectors, path


def _text_config(tiny, cache_dir, data_path=FIXTURES):
    config = GenRecConfig(model="SASRec", dataset="tiny-beauty",
                          config_dict=tiny(cache_dir=str(cache_dir), data_path=str(data_path)))
    return config, create_dataset(config)


@pytest.fixture
def encoder_calls(text_cache, monkeypatch):
    """The encoder replaced by the vectors it gave (the rebuilds here test the cache, not the encoder): the list
    of its calls."""
    from recbole_genrec.representation import text

    calls = []

    def encode(texts, *args, **kwargs):
        calls.append(len(texts))
        return text_cache[0].copy()

    monkeypatch.setattr(text, "encode_texts", encode)
    return calls


def _seed_cache(text_cache, cache_dir, with_sidecar=True):
    """A copy of the computed text cache under `cache_dir`; returns its path there."""
    _, source = text_cache
    target = os.path.join(cache_dir, "tiny-beauty", os.path.basename(source))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy(source, target)
    if with_sidecar:
        shutil.copy(source + ".meta.json", target + ".meta.json")
    return target


def _truncate(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(int(size * keep))


def _warnings(caplog):
    return [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]


# ---- text embeddings ------------------------------------------------------------------------------------------------
def test_text_cache_records_what_it_holds(text_cache):
    vectors, path = text_cache
    meta = json.load(open(path + ".meta.json"))
    assert meta["shape"] == [288, 384] and meta["n_items"] == 287 and meta["dtype"] == "float32"
    assert meta["bytes"] == os.path.getsize(path) and len(meta["sha1"]) == 40
    assert meta["key"] in os.path.basename(path) and meta["inputs"]["text_fields"] == ["title", "brand", "categories",
                                                                                       "price"]
    assert not [name for name in os.listdir(os.path.dirname(path)) if name.endswith(".tmp")]


@pytest.mark.parametrize("with_sidecar", [True, False], ids=["sidecar", "legacy"])
def test_truncated_text_cache_is_reported_and_rebuilt(tiny, text_cache, encoder_calls, tmp_path, caplog,
                                                      with_sidecar):
    vectors, _ = text_cache
    path = _seed_cache(text_cache, tmp_path, with_sidecar)
    _truncate(path)
    config, dataset = _text_config(tiny, tmp_path)
    with caplog.at_level("INFO", logger="recbole_genrec"):
        rebuilt = item_text_embeddings(config, dataset)
    (warning,) = _warnings(caplog)
    assert f"[{path}] is unusable" in warning and ("truncated" in warning if with_sidecar else "unreadable" in warning)
    assert encoder_calls == [288] and np.array_equal(rebuilt, vectors)
    assert json.load(open(path + ".meta.json"))["bytes"] == os.path.getsize(path)  # rewritten, with a sidecar
    caplog.clear()
    with caplog.at_level("INFO", logger="recbole_genrec"):  # the rerun reads the rebuilt file
        assert np.array_equal(item_text_embeddings(config, dataset), rebuilt)
    assert not _warnings(caplog) and f"Cache hit: text-all-MiniLM-L6-v2 from [{path}]" in caplog.text
    assert encoder_calls == [288]


def test_text_cache_of_the_wrong_shape_is_rebuilt_before_any_tokenizer_sees_it(tiny, text_cache, encoder_calls,
                                                                                 tmp_path, caplog):
    vectors, source = text_cache
    path = os.path.join(tmp_path, "tiny-beauty", os.path.basename(source))
    os.makedirs(os.path.dirname(path))
    np.save(path, vectors[:100])  # a file of another item list under this key (no sidecar: a legacy file)
    config, dataset = _text_config(tiny, tmp_path)
    with caplog.at_level("WARNING", logger="recbole_genrec"):
        rebuilt = item_text_embeddings(config, dataset)
    (warning,) = _warnings(caplog)
    assert f"[{path}] is unusable: 100 rows, expected 288 (287 items + the padding row)" in warning
    assert rebuilt.shape == (288, 384) and encoder_calls == [288]
    assert np.array_equal(np.load(path), vectors)  # the file under this key now holds this dataset's rows


def test_a_tokenizer_never_fits_or_caches_on_vectors_of_other_items(text_cache, tmp_path):
    vectors, _ = text_cache
    config, dataset = _sid_config(tmp_path)
    with pytest.raises(ValueError, match=r"item vectors have shape \[100, 384\], expected \[288, d\].*Nothing was "
                                         r"fitted or cached"):
        fit_semantic_ids(config, dataset, vectors[:100])
    assert not os.path.exists(tmp_path / "tiny-beauty")


def test_bad_shipped_artefact_is_refused_never_rewritten(tiny, text_cache, encoder_calls, tmp_path):
    vectors, source = text_cache
    data_path = tmp_path / "data"
    shutil.copytree(os.path.join(FIXTURES, "tiny-beauty"), data_path / "tiny-beauty")
    shipped = data_path / "tiny-beauty" / "cache" / os.path.basename(source)
    os.makedirs(shipped.parent)
    np.save(shipped, vectors[:-1])  # one row short (a legacy file: no sidecar)
    before = shipped.read_bytes()
    config, dataset = _text_config(tiny, tmp_path / "cache", data_path=data_path)
    with pytest.raises(CacheFileError, match=rf"Shipped artefact \[{shipped}\] is unusable: 287 rows, expected 288.*"
                                             r"read-only.*never rewritten"):
        item_text_embeddings(config, dataset)
    assert shipped.read_bytes() == before and not (tmp_path / "cache").exists() and not encoder_calls
    shutil.copy(source, shipped)  # restored (legacy, without its sidecar): read as before
    assert np.array_equal(item_text_embeddings(config, dataset), vectors) and not (tmp_path / "cache").exists()
    shutil.copy(source + ".meta.json", str(shipped) + ".meta.json")
    _truncate(shipped, keep=0.9)  # with a sidecar, a truncated shipped file is named too
    with pytest.raises(CacheFileError, match=rf"\[{shipped}\] is unusable: .* bytes where its metadata records"):
        item_text_embeddings(config, dataset)


def test_shipped_amazon_beauty_text_cache_still_loads(tmp_path):
    """The text embeddings in git (a file from before sidecars) pass the checks as they are."""
    folder = os.path.join(ROOT, "dataset", "amazon-beauty", "cache")
    (path,) = glob.glob(os.path.join(folder, "text-all-MiniLM-L6-v2-*.npy"))
    key = os.path.basename(path)[len("text-all-MiniLM-L6-v2-"):-len(".npy")]
    cache = ArtifactCache(str(tmp_path), "amazon-beauty", shipped_dir=folder)
    vectors = cache.load("text-all-MiniLM-L6-v2", key, ITEM_ARRAYS, n_items=12101)
    assert vectors.shape == (12102, 384) and os.listdir(tmp_path) == []


# ---- semantic IDs ---------------------------------------------------------------------------------------------------
def _sid_config(cache_dir):
    tokens = ["[PAD]"] + [f"item{index}" for index in range(287)]
    config = {"tokenizer": "RQKMeans", "tokenizer_params": RQKMEANS, "device": "cpu", "seed": 1,
              "cache_dir": str(cache_dir), "dataset": "tiny-beauty", "sid_collapse": "warn"}
    return config, SimpleNamespace(iid_field="item_id", field2id_token={"item_id": tokens})


@pytest.mark.parametrize("with_sidecar", [True, False], ids=["sidecar", "legacy"])
def test_truncated_semantic_id_cache_is_reported_and_refitted(text_cache, tmp_path, caplog, with_sidecar):
    vectors, _ = text_cache
    config, dataset = _sid_config(tmp_path)
    fitted = fit_semantic_ids(config, dataset, vectors)
    path = fitted.cache_path
    assert fitted.fit_seconds > 0 and os.path.isfile(path + ".meta.json") and os.path.isfile(path[:-3] + ".json")
    if not with_sidecar:
        os.remove(path + ".meta.json")
    _truncate(path)
    os.remove(path[:-3] + ".json")
    with caplog.at_level("WARNING", logger="recbole_genrec"):
        refitted = fit_semantic_ids(config, dataset, vectors)  # was: a raw RuntimeError from torch.load, every rerun
    (warning,) = _warnings(caplog)
    assert f"[{path}] is unusable" in warning and ("truncated" in warning if with_sidecar else "unreadable" in warning)
    assert refitted.fit_seconds > 0 and torch.equal(refitted.codes, fitted.codes)
    again = fit_semantic_ids(config, dataset, vectors)
    assert again.fit_seconds == 0.0 and torch.equal(again.codes, fitted.codes)  # the rerun loads the refit
    assert os.path.isfile(path[:-3] + ".json")


def test_semantic_ids_outside_their_vocabulary_are_rebuilt(text_cache, tmp_path, caplog):
    vectors, _ = text_cache
    config, dataset = _sid_config(tmp_path)
    fitted = fit_semantic_ids(config, dataset, vectors)
    state = torch.load(fitted.cache_path, weights_only=True)
    state["codes"][5, 0] = 16  # level 0 has 16 codes: this one would index past the embedding table
    torch.save(state, fitted.cache_path)
    os.remove(fitted.cache_path + ".meta.json")  # as if written by hand or by an older version
    with caplog.at_level("WARNING", logger="recbole_genrec"):
        refitted = fit_semantic_ids(config, dataset, vectors)
    assert "codes outside their level's vocabulary" in _warnings(caplog)[0] and refitted.fit_seconds > 0
    assert torch.equal(refitted.codes, fitted.codes)


# ---- the cache itself -----------------------------------------------------------------------------------------------
def test_width_and_metadata_mismatches_are_rebuilt(tmp_path, caplog):
    cache = ArtifactCache(str(tmp_path), "toy")
    narrow = np.vstack([np.zeros((1, 4)), np.ones((3, 4))]).astype(np.float32)
    wide = np.hstack([narrow, narrow])
    path = cache.save("cf-SASRec-d4", "k1", ITEM_ARRAYS, narrow, n_items=3, width=4)
    calls = []

    def compute():
        calls.append(1)
        return wide

    assert np.array_equal(cache.get_or_compute_array("cf-SASRec-d4", "k1", compute, n_items=3, width=4), narrow)
    assert not calls
    with caplog.at_level("WARNING", logger="recbole_genrec"):  # another width under the same name: rebuilt
        assert np.array_equal(cache.get_or_compute_array("cf-SASRec-d4", "k1", compute, n_items=3, width=8), wide)
    assert f"[{path}] is unusable: 4 columns, expected 8" in _warnings(caplog)[0] and calls == [1]
    with pytest.raises(ValueError, match=r"The computed cf-SASRec-d4 has 8 columns, expected 4: not caching it"):
        cache.save("cf-SASRec-d4", "k1", ITEM_ARRAYS, wide, n_items=3, width=4)
    with open(path + ".meta.json", "w") as handle:
        handle.write("{not json")
    caplog.clear()
    with caplog.at_level("WARNING", logger="recbole_genrec"):
        cache.get_or_compute_array("cf-SASRec-d4", "k1", compute, n_items=3, width=8)
    assert f"[{path}] is unusable: its metadata [{path}.meta.json] is unreadable" in _warnings(caplog)[0]
    assert calls == [1, 1] and json.load(open(path + ".meta.json"))["shape"] == [4, 8]
    nan = narrow.copy()
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values in 1 rows \(e.g. rows \[2\]\)"):
        cache.save("cf-SASRec-d4", "k2", ITEM_ARRAYS, nan, n_items=3)


def test_an_interrupted_write_leaves_the_previous_file_or_none(tmp_path):
    cache = ArtifactCache(str(tmp_path), "toy")
    good = np.vstack([np.zeros((1, 2)), np.ones((2, 2))]).astype(np.float32)

    class Interrupted(type(ITEM_ARRAYS)):  # dies half-way through writing the file
        def write(self, value, path):
            with open(path, "wb") as handle:
                handle.write(b"\x93NUMPY partial")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.save("text-x", "k", Interrupted(), good, n_items=2)
    assert os.listdir(cache.root) == []  # no file under the cache name, no temporary file left behind
    path = cache.save("text-x", "k", ITEM_ARRAYS, good, n_items=2)
    with pytest.raises(KeyboardInterrupt):
        cache.save("text-x", "k", Interrupted(), good * 2, n_items=2)
    assert np.array_equal(np.load(path), good)  # the previous file, whole
    assert [name for name in os.listdir(cache.root) if name.endswith(".tmp")] == []


def test_semantic_id_cache_key_holds_the_resolved_tokenizer_parameters(text_cache, tmp_path, monkeypatch):
    """Naming a default explicitly loads the same cache; a changed default refits (was: the key held only the
    parameters given, so IDs fitted under an old default were loaded after the default changed)."""
    from recbole_genrec.tokenization import RQKMeansTokenizer

    vectors, _ = text_cache
    config, dataset = _sid_config(tmp_path)
    assert "standardize" not in RQKMEANS  # the default decides it in `config`
    fitted = fit_semantic_ids(config, dataset, vectors)
    default = RQKMeansTokenizer.default_params["standardize"]
    explicit = dict(config, tokenizer_params={**RQKMEANS, "standardize": default})
    again = fit_semantic_ids(explicit, dataset, vectors)
    assert again.fit_seconds == 0.0 and again.cache_path == fitted.cache_path
    monkeypatch.setitem(RQKMeansTokenizer.default_params, "standardize", not default)
    changed = fit_semantic_ids(config, dataset, vectors)
    assert changed.fit_seconds > 0 and changed.cache_path != fitted.cache_path


def test_semantic_id_cache_key_holds_the_tokenizer_revision(text_cache, tmp_path, monkeypatch):
    """A fit that changed under the same parameters (the tokenizer's `revision` raised) refits instead of loading
    the IDs the old code cached; the cache's record names the revision."""
    import json

    from recbole_genrec.tokenization import RQKMeansTokenizer

    vectors, _ = text_cache
    config, dataset = _sid_config(tmp_path)
    fitted = fit_semantic_ids(config, dataset, vectors)
    monkeypatch.setattr(RQKMeansTokenizer, "revision", RQKMeansTokenizer.revision + 1)
    refitted = fit_semantic_ids(config, dataset, vectors)
    assert refitted.fit_seconds > 0 and refitted.cache_path != fitted.cache_path
    with open(refitted.cache_path + ".meta.json") as handle:
        assert json.load(handle)["inputs"]["revision"] == RQKMeansTokenizer.revision
