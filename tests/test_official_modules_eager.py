"""benchmarks/official_modules/eager.py: our EAGER with the official module (yewzz/EAGER) on the tiny fixture.

Needs the official checkout: OFFICIAL_EAGER_DIR=/path/to/EAGER (skipped without it; CI has none)."""
import os
import sys

import pytest
import torch

from conftest import check_run_and_reload, trained_model

CHECKOUT = os.environ.get("OFFICIAL_EAGER_DIR")
pytestmark = [pytest.mark.skipif(not CHECKOUT, reason="OFFICIAL_EAGER_DIR (a checkout of yewzz/EAGER) is not set"),
              pytest.mark.usefixtures("one_torch_thread")]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

# 287 items: the official module decodes two-level trees, so 17+ branches (17^2 >= 287)
SWAP = {"d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1,
        "warmup_steps": 5, "train_batch_size": 64, "learning_rate": 3e-3, "beam_size": 10,
        "cf_params": {"hidden_size": 8, "inner_size": 16, "n_layers": 1, "epochs": 2},
        "tokenizer_params": {"branches": 17, "niter": 10, "collision": "none"}}


@pytest.fixture(scope="module")
def swapped():
    from official_modules import eager

    from recbole_genrec import registry

    cls, get_model = eager.swapped_class(CHECKOUT), registry.get_model
    registry.get_model = lambda name: cls if name == "EAGER" else get_model(name)
    yield cls
    registry.get_model = get_model


def test_the_swapped_class_is_our_eager_registered_for_checkpoints(swapped):
    from recbole_genrec.model import eager as eager_module

    assert issubclass(swapped, eager_module.EAGER) and swapped.__module__ == eager_module.__name__
    assert getattr(eager_module, swapped.__name__) is swapped


def test_official_layout_and_decoding_never_read_the_target(swapped, tiny):
    model, interaction = trained_model(tiny, "EAGER", SWAP)
    assert type(model) is swapped and model.peer["behaviour"].trm.encoder is model.peer["semantic"].trm.encoder
    items, lengths = model.history(interaction)
    layout = model.official_history(interaction)
    for row in range(len(items)):  # right-aligned, 0-based, padding item_num
        length = int(lengths[row])
        assert layout[row, -length:].tolist() == (items[row, :length] - 1).tolist()
        assert (layout[row, :-length] == model.official_item_num).all()
    torch.manual_seed(0)
    top, scores = model.generate_topk(interaction, 10)
    assert ((top >= 1) & (top < model.n_items) | (top == -1)).all()
    from recbole.data.interaction import Interaction

    other = Interaction({key: value.clone() for key, value in interaction.interaction.items()})  # another target
    other[model.POS_ITEM_ID] = torch.roll(interaction[model.POS_ITEM_ID], 1)
    assert torch.equal(model.generate_topk(other, 10)[0], top)


def test_a_run_trains_evaluates_and_reloads(swapped, tiny):
    check_run_and_reload("EAGER", "tiny-beauty", tiny(**SWAP))
