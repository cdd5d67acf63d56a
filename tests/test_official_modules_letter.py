"""benchmarks/official_modules/letter.py: our LETTER with the official LETTER-TIGER module (HonghuiBao2000/LETTER) on
the tiny fixture.

Needs the official checkout (OFFICIAL_LETTER_DIR) and the transformers 4.x it runs on, with sentencepiece; skipped
otherwise (CI has no checkout)."""
import os
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_LETTER, check_run_and_reload, overfit_one_batch, trained_model

CHECKOUT = os.environ.get("OFFICIAL_LETTER_DIR")
pytestmark = [pytest.mark.skipif(not CHECKOUT, reason="OFFICIAL_LETTER_DIR (a checkout of HonghuiBao2000/LETTER) is "
                                                      "not set"),
              pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def swapped():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("sentencepiece")
    if int(transformers.__version__.split(".")[0]) != 4:
        pytest.skip(f"the official code runs on transformers 4.x, this environment has {transformers.__version__}")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from official_modules import letter as adapter

    from recbole_genrec import registry

    cls, get_model = adapter.swapped_class(CHECKOUT), registry.get_model
    registry.get_model = lambda name: cls if name == "LETTER" else get_model(name)
    yield cls
    registry.get_model = get_model


def test_the_swapped_class_is_our_letter_registered_for_checkpoints(swapped):
    from recbole_genrec.model import letter as letter_module

    assert issubclass(swapped, letter_module.LETTER) and swapped.__module__ == letter_module.__name__
    assert getattr(letter_module, swapped.__name__) is swapped


def test_official_loss_is_finite_and_decreases_on_one_batch(swapped, tiny):
    from recbole_genrec.quick_start import prepare_run

    _, _, model, train_data, _, _ = prepare_run("LETTER", "tiny-beauty", None, tiny(**TINY_LETTER))
    assert type(model) is swapped and not hasattr(model, "backbone")
    assert type(model.letter).__module__ == "letter_official.modeling_letter"
    # finetune.py's vocabulary: T5's 32,100 pieces + every code token in use
    distinct = {code for row in model.item_codes[1:].tolist() for code in enumerate(row)}
    assert model.letter.config.vocab_size == model.letter.shared.num_embeddings == 32100 + len(distinct)
    batch = next(iter(train_data))
    losses = overfit_one_batch(model, batch, steps=6)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # the official temperature divides the logits (LETTER.ranking_loss)
    model.eval()
    with torch.no_grad():
        base = model.calculate_loss(batch)
        model.letter.set_hyper(0.5)
        sharper = model.calculate_loss(batch)
    assert not torch.isclose(base, sharper)


def test_official_decoding_ranks_real_items_without_reading_the_target(swapped, tiny):
    model, interaction = trained_model(tiny, "LETTER", TINY_LETTER)
    items, scores = model.generate_topk(interaction, 10)
    assert items.shape == (len(interaction), 10)
    assert ((items >= 1) & (items < model.item_codes.shape[0])).all()  # constrained: every beam names an item
    assert all(len(set(row.tolist())) == 10 for row in items)
    assert torch.isfinite(scores).all() and (scores[:, :-1] >= scores[:, 1:]).all()
    # the strings of the first user's beam, ranked by the official sequence scores, are our items' codes
    strings, beam_scores = model.official_generate(model.history(interaction)[0][:1])
    order = sorted(range(len(strings)), key=lambda i: -float(beam_scores[i]))
    expected = [model.item_of_string[strings[i].replace(" ", "")] for i in order][:10]
    assert items[0].tolist() == expected
    from recbole.data.interaction import Interaction

    other = Interaction({key: value.clone() for key, value in interaction.interaction.items()})  # another target
    other[model.POS_ITEM_ID] = torch.roll(interaction[model.POS_ITEM_ID], 1)
    assert torch.equal(model.generate_topk(other, 10)[0], items)


def test_swap_end_to_end_and_checkpoint_reload(swapped, tiny):
    check_run_and_reload("LETTER", "tiny-beauty", tiny(**TINY_LETTER))
