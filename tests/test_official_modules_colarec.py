"""benchmarks/official_modules/colarec.py: the official ColaRec module inside our pipeline (tiny-beauty, one pass).

Needs the official checkout (OFFICIAL_COLAREC_DIR=/path/to/Junewang0614/ColaRec) and transformers 4.x (the official
decoding reads tuple past_key_values); skipped otherwise, as in CI."""
import importlib.util
import os

import pytest
import torch

from conftest import ROOT

CHECKOUT = os.environ.get("OFFICIAL_COLAREC_DIR")
pytestmark = [
    pytest.mark.skipif(not CHECKOUT, reason="OFFICIAL_COLAREC_DIR (the official ColaRec checkout) is not set"),
    pytest.mark.usefixtures("one_torch_thread"),
]

TINY = {"d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1,
        "cf_params": {"model": "LightGCN", "embedding_size": 8, "epochs": 2},
        "tokenizer_params": {"branches": 8, "niter": 10, "cluster_size_max": "subtree"},
        "beam_size": 20, "sample_item_num": 4, "train_batch_size": 256, "learning_rate": 0.003}


@pytest.fixture(scope="module")
def swapped(tiny):
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) != 4:
        pytest.skip(f"the official module needs transformers 4.x, found {transformers.__version__}")
    spec = importlib.util.spec_from_file_location(
        "official_colarec", os.path.join(ROOT, "benchmarks", "official_modules", "colarec.py"))
    adapter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(adapter)
    cls = adapter.swapped_class(CHECKOUT)

    from recbole_genrec import registry
    from conftest import trained_model

    get_model = registry.get_model
    registry.get_model = lambda name: cls if name == "ColaRec" else get_model(name)
    try:
        model, interaction = trained_model(tiny, "ColaRec", TINY)
    finally:
        registry.get_model = get_model
    return adapter, cls, model, interaction


def test_the_class_is_ours_with_the_official_network_registered_for_checkpoints(swapped):
    adapter, cls, model, _ = swapped
    from recbole_genrec.model import colarec

    assert issubclass(cls, colarec.ColaRec) and cls.__module__ == colarec.__name__
    assert getattr(colarec, cls.__name__) is cls
    assert type(model.official).__name__ == "V4T5smallModel" and not hasattr(model, "backbone")
    assert model.official.config.code_num == model.n_levels and model.official.config.cid_token_num == 8
    assert len(adapter.OFFICIAL_COMMIT) == 40 and adapter.PARTS


def test_contrastive_positive_is_another_item_of_the_leaf_unless_alone(swapped):
    _, _, model, _ = swapped
    items = torch.arange(1, model.n_items).repeat(4)
    aug = model.contrastive_positives(items)
    assert torch.equal(model.item_codes[aug, :-1], model.item_codes[items, :-1])
    assert torch.equal(aug == items, model.leaf_size[items] == 1)


def test_decoding_reads_the_history_only_and_returns_unseen_catalogue_items(swapped):
    _, _, model, interaction = swapped
    items, scores = model.generate_topk(interaction, 10)
    assert items.shape == (len(interaction), 10)
    assert ((items >= 1) & (items < model.n_items) | (items == -1)).all()
    history, _ = model.history(interaction)
    assert not ((items.unsqueeze(2) == history.unsqueeze(1)) & (items.unsqueeze(2) > 0)).any()
    from recbole.data.interaction import Interaction

    shuffled = Interaction({key: interaction[key] for key in interaction.columns})
    shuffled.update(Interaction({model.ITEM_ID: interaction[model.ITEM_ID].flip(0)}))
    again, _ = model.generate_topk(shuffled, 10)
    assert torch.equal(items, again)  # the target field never reaches the module
