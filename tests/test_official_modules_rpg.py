"""benchmarks/official_modules/rpg.py: our RPG with the official module (facebookresearch/RPG_KDD2025) on the tiny
fixture.

Needs the official checkout (OFFICIAL_RPG_DIR=/path/to/RPG_KDD2025) and the transformers 4.x it was written for;
skipped otherwise, as in CI."""
import os
import sys

import pytest
import torch

from conftest import ROOT, check_run_and_reload, overfit_one_batch, trained_model

CHECKOUT = os.environ.get("OFFICIAL_RPG_DIR")
pytestmark = [
    pytest.mark.skipif(not CHECKOUT, reason="OFFICIAL_RPG_DIR (a checkout of facebookresearch/RPG_KDD2025) is not set"),
    pytest.mark.usefixtures("one_torch_thread"),
]

SWAP = {"d_model": 32, "num_heads": 2, "d_ff": 64, "num_layers": 1,
        "tokenizer_params": {"num_digits": 8, "codebook_size": 16, "collision": "none", "opq_niter": 10},
        "warmup_steps": 10, "learning_rate": 0.003, "num_beams": 10, "num_edges": 20, "propagation_steps": 2}


@pytest.fixture(scope="module")
def swapped():
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) != 4:
        pytest.skip(f"the official code was written for transformers 4.x, found {transformers.__version__}")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from official_modules import rpg as adapter

    from recbole_genrec import registry

    cls, get_model = adapter.swapped_class(CHECKOUT), registry.get_model
    registry.get_model = lambda name: cls if name == "RPG" else get_model(name)
    yield cls
    registry.get_model = get_model


@pytest.fixture(scope="module")
def built(swapped, tiny):
    from recbole_genrec.quick_start import prepare_run

    _, _, model, train_data, _, _ = prepare_run("RPG", "tiny-beauty", None, tiny(**SWAP))
    return model, next(iter(train_data))


def test_the_swapped_class_is_our_rpg_registered_for_checkpoints(swapped):
    from recbole_genrec.model import rpg as rpg_module

    assert issubclass(swapped, rpg_module.RPG) and swapped.__module__ == rpg_module.__name__
    assert getattr(rpg_module, swapped.__name__) is swapped


def test_official_network_tokens_and_layout(built):
    model, batch = built
    official = model.official
    assert type(official).__module__ == "genrec.models.RPG.model"
    m, k = model.n_digits, model.codebook_size
    assert official.gpt2.wte.num_embeddings == m * k + 2  # padding 0, the codes, EOS
    assert official.gpt2.config.activation_function == "gelu_new"
    assert official.gpt2.config.layer_norm_epsilon == 1e-12
    assert all(head.linear.weight.abs().sum() == 0 for head in official.pred_heads)  # official ResBlock init
    tokens = official.item_id2tokens
    assert torch.equal(tokens[1:] - 1 - torch.arange(m) * k, model.item_codes[1:]) and (tokens[0] == 0).all()
    assert not any(name.startswith(("digit_embedding", "backbone", "heads")) for name in model.state_dict())
    model.check_layout(batch)  # the official tokenizer's rows for the same sequences


def test_the_official_loss_trains(built):
    model, batch = built
    losses = overfit_one_batch(model, batch)
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert model.official.pred_heads[0].linear.weight.abs().sum() > 0


@pytest.mark.parametrize("inference", ["exact", "graph"])
def test_rankings_are_real_items_from_the_history_only(swapped, tiny, inference):
    model, interaction = trained_model(tiny, "RPG", {**SWAP, "rpg_inference": inference})
    torch.manual_seed(0)  # graph_propagation draws its start items from torch's global generator
    items, scores = model.generate_topk(interaction, 10)
    assert items.shape == scores.shape == (len(interaction), 10)
    assert ((items >= 1) & (items < model.n_items)).all()
    assert all(len(set(row.tolist())) == 10 for row in items)
    if inference == "graph":
        assert model.official.init_flag and model.official.adjacency.shape == (model.n_items, SWAP["num_edges"])
    from recbole.data.interaction import Interaction

    other = Interaction({key: value.clone() for key, value in interaction.interaction.items()})
    other[model.POS_ITEM_ID] = torch.roll(interaction[model.POS_ITEM_ID], 1)  # another target
    torch.manual_seed(0)
    assert torch.equal(model.generate_topk(other, 10)[0], items)
    assert torch.equal(model.selection_topk(interaction, 10)[0], model.selection_topk(other, 10)[0])


def test_a_run_trains_evaluates_and_reloads(swapped, tiny):
    check_run_and_reload("RPG", "tiny-beauty", tiny(**SWAP, rpg_inference="exact"))


# ---- equivalence at equal weights -------------------------------------------------------------------------------
# The official RPG module's weights copied into our RPG (HF GPT-2's Conv1D weights are [in, out], our nn.Linear
# [out, in]; the official ResBlock head d is our ResidualHeads slice d; our code table is the official wte without its
# padding row 0 and EOS row), then loss, gradients, per-digit log-probabilities and top-10 lists compared. Our
# backbone uses GPT-2's gelu_new, LayerNorm eps 1e-12 and scaled residual init, so nothing differs by design.
EQUAL = {**SWAP, "embd_dropout": 0.0, "attn_dropout": 0.0, "resid_dropout": 0.0,  # train mode without dropout draws
         "rpg_inference": "exact"}
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def _same(tensor):
    return tensor


def _transposed(tensor):  # HF GPT-2's Conv1D [in, out] -> nn.Linear [out, in]
    return tensor.T


def _codes_only(tensor):  # the official wte without its padding row 0 and EOS row
    return tensor[1:-1]


def rpg_parameter_pairs(ours, official):
    """(our parameter, index into it or None, the official parameter, the view of it that equals ours) for every
    parameter of both models; the official wte's padding and EOS rows are the only official values without a
    counterpart."""
    gpt2 = official.gpt2
    pairs = [(ours.digit_embedding.weight, None, gpt2.wte.weight, _codes_only),
             (ours.backbone.position.weight, None, gpt2.wpe.weight, _same),
             (ours.backbone.ln_f.weight, None, gpt2.ln_f.weight, _same),
             (ours.backbone.ln_f.bias, None, gpt2.ln_f.bias, _same)]
    for block, theirs in zip(ours.backbone.blocks, gpt2.h, strict=True):
        for our_module, their_module in ((block.ln_1, theirs.ln_1), (block.ln_2, theirs.ln_2)):
            pairs += [(our_module.weight, None, their_module.weight, _same),
                      (our_module.bias, None, their_module.bias, _same)]
        for our_module, their_module in ((block.attn.qkv, theirs.attn.c_attn), (block.attn.proj, theirs.attn.c_proj),
                                         (block.mlp[0], theirs.mlp.c_fc), (block.mlp[2], theirs.mlp.c_proj)):
            pairs += [(our_module.weight, None, their_module.weight, _transposed),
                      (our_module.bias, None, their_module.bias, _same)]
    assert ours.heads.weight.shape[0] == 1  # one residual block per digit head, as the official ResBlock
    for digit, head in enumerate(official.pred_heads):  # h + SiLU(h W_d + b_d): W_d = the official weight.T
        pairs += [(ours.heads.weight, (0, digit), head.linear.weight, _transposed),
                  (ours.heads.bias, (0, digit), head.linear.bias, _same)]
    covered = {id(ours_parameter) for ours_parameter, *_ in pairs}
    assert covered == {id(parameter) for parameter in ours.parameters()}
    assert {id(official_parameter) for _, _, official_parameter, _ in pairs} == \
        {id(parameter) for parameter in official.parameters()}
    assert sum(view(theirs).numel() for _, _, theirs, view in pairs) == \
        sum(parameter.numel() for parameter in ours.parameters())
    return pairs


def _part(tensor, index):
    return tensor if index is None else tensor[index]


@pytest.fixture(scope="module")
def equal_weights(swapped, tiny):
    """(official-module RPG, our RPG with its weights, a training batch, a test batch of 32 users) on the same split
    and OPQ codes. The official weights are perturbed first where HF's initialisation leaves them constant (biases,
    LayerNorms, the zero head weights), so each of them matters."""
    from recbole_genrec.model.rpg import RPG
    from recbole_genrec.quick_start import prepare_run

    config, _, model, train_data, _, test_data = prepare_run("RPG", "tiny-beauty", None, tiny(**EQUAL))
    ours = RPG(config, train_data._dataset)
    assert torch.equal(ours.item_codes, model.item_codes)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.official.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith("pred_heads"):
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
        for ours_parameter, index, official, view in rpg_parameter_pairs(ours, model.official):
            _part(ours_parameter, index).copy_(view(official))
    model.eval(), ours.eval()
    return model, ours, next(iter(train_data)), next(iter(test_data))[0][:32]


def test_equal_weights_equal_loss_and_gradients(equal_weights):
    """Our loss (RPG.sequence_loss, every scored position of the rows) equals the official RPG.forward loss on the
    swap's official batch (the official tokenizer's layout, checked by check_layout), eval and train mode (dropout
    0). Measured on a training batch of 256 rows: |difference| 9.5e-7 on a loss of 9.546. Every gradient agrees
    within 3.4e-7 of the largest official entry of its tensor (asserted < 1e-5); the official token table's padding
    and EOS rows, which have no counterpart in ours, get zero gradient."""
    model, ours, batch, _ = equal_weights
    model.check_layout(batch)
    for training in (False, True):
        ours.train(training), model.train(training)
        with torch.no_grad():
            torch.testing.assert_close(ours.calculate_loss(batch), model.calculate_loss(batch), **TOLERANCE)
    ours.zero_grad(), model.zero_grad()
    ours.calculate_loss(batch).backward()
    model.calculate_loss(batch).backward()
    model.eval(), ours.eval()
    worst = 0.0
    for ours_parameter, index, official, view in rpg_parameter_pairs(ours, model.official):
        expected = view(official.grad)
        gap = (_part(ours_parameter.grad, index) - expected).abs().max() / expected.abs().max()
        worst = max(worst, float(gap))
    assert worst < 1e-5
    assert (model.official.gpt2.wte.weight.grad[[0, -1]] == 0).all()
    ours.zero_grad(), model.zero_grad()


def test_equal_weights_equal_scores_and_top10(equal_weights, monkeypatch):
    """The official RPG.generate (exact scoring: the swap's selection_topk and rpg_inference exact) returns our
    top-10 lists (RPG.full_sort_predict), and the per-digit log-softmax it ranks with (recorded from its own
    F.log_softmax calls) equals ours (RPG.digit_log_probs). Measured on 32 test users: log-probabilities within
    3.8e-6 of values up to 26.4 in magnitude (asserted 1e-5); all 32 top-10 lists hold the same items, 15 in the
    same order, the other 17 differ only in the order of items that share their whole code (34 positions; 220
    distinct codes for the 287 items), whose scores tie exactly and which torch.topk may return in either order."""
    model, ours, _, interaction = equal_weights
    official_module = sys.modules[type(model.official).__module__]
    recorded = []

    class RecordingF:
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        @staticmethod
        def log_softmax(*args, **kwargs):
            recorded.append(torch.nn.functional.log_softmax(*args, **kwargs))
            return recorded[-1]

    monkeypatch.setattr(official_module, "F", RecordingF())
    with torch.no_grad():
        items, _ = model.selection_topk(interaction, 10)
        log_probs = ours.digit_log_probs(interaction)
        our_items = ours.full_sort_predict(interaction).topk(10, dim=1).indices
    assert len(recorded) == ours.n_digits
    torch.testing.assert_close(torch.stack(recorded, dim=1), log_probs, rtol=0, atol=1e-5)
    # the same lists, up to the order of exact ties: at every rank the same item or one with the same whole code
    assert (ours.item_codes[items] == ours.item_codes[our_items]).all()
    assert all(set(official_row) == set(our_row) for official_row, our_row in zip(items.tolist(), our_items.tolist()))
    scores = ours.full_sort_predict(interaction)
    torch.testing.assert_close(scores.gather(1, items), scores.gather(1, our_items), rtol=0, atol=1e-6)
    assert torch.equal(ours.generate_topk(interaction, 10)[0], our_items)  # rpg_inference: exact
