"""The MQL4GRec official-module swap (benchmarks/official_modules/mql4grec.py) on the tiny multimodal fixture.

Needs the official checkout (OFFICIAL_MQL4GREC_DIR, e.g. a clone of zhaijianyang/MQL4GRec) and the transformers 4.x it
pins, with sentencepiece; skipped otherwise (CI has no checkout)."""
import os
import sys

import pytest
import torch

from conftest import ROOT, check_run_and_reload, trained_model
from test_mql4grec import TINY_PRETRAIN, tiny_mm  # noqa: F401  (tiny_mm: a fixture)

CHECKOUT = os.environ.get("OFFICIAL_MQL4GREC_DIR")
pytestmark = [pytest.mark.skipif(not CHECKOUT, reason="OFFICIAL_MQL4GREC_DIR (the official checkout) is not set"),
              pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def swapped():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("sentencepiece")
    if int(transformers.__version__.split(".")[0]) >= 5:
        pytest.skip("the official code pins transformers 4.39.3")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from benchmarks.official_modules import mql4grec as adapter
    from recbole_genrec import registry

    cls = adapter.swapped_class(CHECKOUT)
    get_model = registry.get_model
    registry.get_model = lambda name: cls if name == "MQL4GRec" else get_model(name)
    yield cls
    registry.get_model = get_model


def test_swap_ranks_with_the_official_fusion_of_official_beams_without_the_target(tiny, tiny_mm, swapped):
    from test_leakage import _blinded

    from recbole_genrec.model.mql4grec import fuse_two_lists

    model, interaction = trained_model(tiny, "MQL4GRec", tiny_mm, dataset="tiny-mm")
    assert isinstance(model, swapped) and not hasattr(model, "backbone")
    distinct = {token for codes in model.code_strings["text"].values() for token in codes.split(">")[:-1]}
    distinct |= {token for codes in model.code_strings["image"].values() for token in codes.split(">")[:-1]}
    assert model.t5.config.vocab_size == 32100 + len(distinct)  # T5's pieces + the codes in use (finetune.py)
    with torch.no_grad():
        items, _ = model.generate_topk(interaction, 10)
        blinded, _ = model.generate_topk(_blinded(model, interaction), 10)
        assert torch.equal(items, blinded)
        assert torch.all(items >= 1) and all(len(set(row.tolist())) == 10 for row in items)
        # Our fusion rule on the same two official beams gives the official fusion's ranking.
        history, _ = model.history(interaction)
        lists = {}
        for modality in ("text", "image"):
            strings, scores = model.official_generate(history, modality)
            found = [model.index2id[modality][text][0] for text in strings]
            lists[modality] = (torch.tensor(found).view(len(history), -1), torch.tensor(scores).view(len(history), -1))
        ours, _ = fuse_two_lists(*lists["text"], *lists["image"], k=10)
    assert torch.equal(ours, items)
    model.train()
    loss = model.calculate_loss(interaction)
    loss.backward()
    assert torch.isfinite(loss) and model.t5.shared.weight.grad is not None


def test_swap_end_to_end_and_checkpoint_reload(tiny, tiny_mm, swapped):
    check_run_and_reload("MQL4GRec", "tiny-mm", tiny(**tiny_mm))


def test_swap_fine_tunes_from_its_pretraining_run(tiny, tiny_mm, swapped):
    from recbole_genrec import safety
    from recbole_genrec.quick_start import prepare_run, pretrain_first

    settings = tiny(**tiny_mm, pretrain_datasets="tiny-pre", pretrain_config=TINY_PRETRAIN)
    fine_tuning = pretrain_first("MQL4GRec", "tiny-mm", None, settings)
    state = safety.load_checkpoint(fine_tuning["pretrained_checkpoint"], map_location="cpu")["state_dict"]
    model = prepare_run("MQL4GRec", "tiny-mm", None, fine_tuning)[2]
    assert model.t5.config.vocab_size == 32100 + 8 * tiny_mm["code_num"]  # pretrain.py: get_all_tokens
    weights = model.t5.state_dict()
    assert all(torch.equal(weights[key], state["t5." + key]) for key in weights)
