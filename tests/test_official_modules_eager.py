"""benchmarks/official_modules/eager.py: our EAGER with the official module (yewzz/EAGER) on the tiny fixture.

Needs the official checkout: OFFICIAL_EAGER_DIR=/path/to/EAGER (skipped without it; CI has none)."""
import contextlib
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


# ---- weight-copy equivalence -----------------------------------------------------------------------------------
# Our EAGER and the swapped class, each built by its own constructor on one synthetic catalogue (no dataset files:
# two full two-level trees of 8 x 8 leaves over 64 items, the behaviour / text vectors given), every weight of the
# official module (scaled up from BERT's std 0.02 to 0.2, so that the lists depend on the history) copied into ours
# by name. Nothing random is drawn in a training step with both auxiliary tasks off (the official contrastive sample
# is a permutation of every item, which a sum does not see).
K, SEQ, BATCH = 8, 6, 16
N_ITEMS = K * K + 1  # every leaf of both trees holds an item
EQUIVALENCE = {
    "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
    "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_", "MAX_ITEM_LIST_LENGTH": SEQ,
    "device": torch.device("cpu"), "beam_size": 10, "d_model": 32, "backbone": "bert", "num_heads": 2, "d_kv": 16,
    "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1, "dropout": 0.1,
    "gct_weights": [1.0, 10.0], "gct_temperature": 0.3, "stt_weight": 1.0,  # built with both tasks, run without
}
STREAMS = ("behaviour", "semantic")
GCT_WEIGHTS = {"behaviour": 1.0, "semantic": 10.0}  # HF_Model.py:170-173
# official parameters without a counterpart in ours, by prefix: the HF encoder's pooler and the decoders' LM head
# (never read: the official logits are final_hidden @ dec_emb), the unused `mask_decoder`, and the parts of the
# semantic-guided transfer task, whose network is another (README: a fairseq-style post-LN decoder with ReLU and
# sinusoidal positions; ours BERT blocks)
UNMAPPED_OFFICIAL = ("trm.encoder.pooler.", "trm.decoder.cls.", "mask_decoder.", "trans_d_rec.", "guide_proj.",
                     "fc_comp.", "start_vec", "mask_vec")
UNMAPPED_OURS = ("transfer.", "guide_projection.", "estimation_head.")  # the transfer task's, as above


class _Dataset:
    """What the two constructors read of a RecBole dataset: the semantic IDs and the number of items."""

    def __init__(self, semantic_ids):
        self.semantic_ids = semantic_ids

    def num(self, field):
        return N_ITEMS


def _full_tree(seed):
    from recbole_genrec.tokenization import SemanticIds, tree_path_codes

    leaves = torch.randperm(K * K, generator=torch.Generator().manual_seed(seed))
    codes = torch.cat([torch.zeros(1, 2, dtype=torch.long), torch.stack([leaves // K, leaves % K], 1)])
    return tree_path_codes(SemanticIds(codes=codes, vocab_sizes=[K, K], quality={}), K)


def _layer_names(ours, theirs, blocks):
    """One BERT layer: our names -> Hugging Face's (tests/test_eager.py's mapping)."""
    names = {}
    for w in ("weight", "bias"):
        for mine, hf in blocks:
            for a in ("query", "key", "value"):
                names[f"{ours}.{mine}.{a}.{w}"] = f"{theirs}.{hf}.self.{a}.{w}"
            names[f"{ours}.{mine}.output.{w}"] = f"{theirs}.{hf}.output.dense.{w}"
            names[f"{ours}.{mine}_norm.{w}"] = f"{theirs}.{hf}.output.LayerNorm.{w}"
        names[f"{ours}.ffn.inner.{w}"] = f"{theirs}.intermediate.dense.{w}"
        names[f"{ours}.ffn.outer.{w}"] = f"{theirs}.output.dense.{w}"
        names[f"{ours}.ffn_norm.{w}"] = f"{theirs}.output.LayerNorm.{w}"
    return names


def _weight_names(ours, swapped):
    """(our parameter, its rows, the swapped model's parameter, its rows); rows None = all.

    Encoder: the official table's rows 0 .. item_num - 1 are the behaviour stream's items (our ids - 1), row
    item_num the shared padding, rows item_num + 1 .. 2 item_num the semantic stream's (HF_Model.py:108-112).
    Decoders (tgt_voc_size = k^2 + k + 2): rows 0 .. k - 1 the first level's nodes, k .. k + k^2 - 1 the leaves,
    k^2 + k the start token, k^2 + k + 1 the unused tgt_pad, k^2 + k + 2 the summary (cls) token; ours: 0 the start
    (PAD), 1 an unused EOS, 2 .. the nodes in the same order, then the summary token."""
    item_num = N_ITEMS - 1
    encoder = "peer.behaviour.trm.encoder."
    names = [("item_embeddings.behaviour.weight", slice(1, None), encoder + "embeddings.word_embeddings.weight",
              slice(0, item_num)),
             ("item_embeddings.semantic.weight", slice(1, None), encoder + "embeddings.word_embeddings.weight",
              slice(item_num + 1, 2 * item_num + 1))]
    stacks = [("decoders.behaviour.", "encoder", encoder, [("attention", "attention")],
               len(ours.encoder.encoder_layers), SEQ)]
    for stream in STREAMS:
        stacks.append((f"decoders.{stream}.", "decoder", f"peer.{stream}.trm.decoder.bert.",
                       [("self_attention", "attention"), ("cross_attention", "crossattention")],
                       len(ours.decoders[stream].decoder_layers),
                       swapped.peer[stream].trm.decoder.bert.embeddings.position_embeddings.num_embeddings))
        size, nodes = ours.vocab[stream].size, K + K * K
        word = f"peer.{stream}.trm.decoder.bert.embeddings.word_embeddings.weight"
        names += [(f"decoders.{stream}.embedding.weight", slice(2, 2 + nodes), word, slice(0, nodes)),
                  (f"decoders.{stream}.embedding.weight", slice(0, 1), word, slice(nodes, nodes + 1)),
                  (f"decoders.{stream}.embedding.weight", slice(size, size + 1), word, slice(nodes + 2, nodes + 3))]
        names += [(f"gct_projection.{stream}.{w}", None, f"peer.{stream}.fc_proj1.{w}", None)
                  for w in ("weight", "bias")]
    for ours_prefix, stack, prefix, blocks, layers, positions in stacks:
        names.append((f"{ours_prefix}{stack}_positions.weight", slice(0, positions),
                      f"{prefix}embeddings.position_embeddings.weight", slice(0, positions)))
        names += [(f"{ours_prefix}{stack}_embedding_norm.{w}", None, f"{prefix}embeddings.LayerNorm.{w}", None)
                  for w in ("weight", "bias")]
        for i in range(layers):
            names += [(f"{ours_prefix}{mine}", None, f"{prefix}{theirs}", None) for mine, theirs in
                      _layer_names(f"{stack}_layers.{i}", f"encoder.layer.{i}", blocks).items()]
    return names


def _token_types():
    """(our position table, the official position table, the official token-type table) of each stack: BERT adds
    token type 0 to every position (README: left out in ours), so it is folded into our position rows."""
    stacks = [("decoders.behaviour.encoder_positions.weight", "peer.behaviour.trm.encoder.embeddings.")]
    stacks += [(f"decoders.{stream}.decoder_positions.weight", f"peer.{stream}.trm.decoder.bert.embeddings.")
               for stream in STREAMS]
    return [(ours, f"{official}position_embeddings.weight", f"{official}token_type_embeddings.weight")
            for ours, official in stacks]


def _rows(tensor, rows):
    return tensor if rows is None else tensor[rows]


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0


def _batch(generator, lengths):
    from recbole.data.interaction import Interaction

    history = torch.randint(1, N_ITEMS, (BATCH, SEQ), generator=generator) * (torch.arange(SEQ) < lengths[:, None])
    return Interaction({"user_id": torch.arange(1, BATCH + 1), "item_id_list": history, "item_length": lengths,
                        "item_id": torch.randint(1, N_ITEMS, (BATCH,), generator=generator)})


@pytest.fixture(scope="module")
def pair(swapped):
    """(ours, the swapped model, a batch of full histories, a batch of shorter ones), ours holding the official
    module's weights; both auxiliary tasks off (`_tasks` turns them on)."""
    import numpy as np

    from recbole_genrec.model import eager as eager_module
    from recbole_genrec.tokenization import SemanticIds

    semantic_ids = SemanticIds.concat({"behaviour": _full_tree(1), "semantic": _full_tree(2)})
    vectors = {stream: np.concatenate([np.zeros((1, width), "float32"),
                                       np.random.RandomState(seed).randn(N_ITEMS - 1, width).astype("float32")])
               for stream, width, seed in (("behaviour", 8, 0), ("semantic", 12, 1))}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(eager_module, "stream_vectors", lambda config, dataset, train_dataset: vectors)
        torch.manual_seed(0)
        ours = eager_module.EAGER(dict(EQUIVALENCE), _Dataset(semantic_ids))
        official = swapped(dict(EQUIVALENCE), _Dataset(semantic_ids))
    theirs, mine = dict(official.named_parameters()), dict(ours.named_parameters())
    with torch.no_grad():
        for parameter in official.peer.parameters():  # BERT's (trm), the contrastive projections keep theirs
            if parameter.dim() >= 2 and parameter.std() < 0.05:
                parameter.mul_(10.0)
        for name, rows, official_name, official_rows in _weight_names(ours, official):
            _rows(mine[name], rows).copy_(_rows(theirs[official_name], official_rows))
        for name, _, official_name in _token_types():
            mine[name] += theirs[official_name][0]
    for model in (ours, official):
        _no_dropout(model)
        model.eval()
    _set_tasks(ours, official, contrastive=False, transfer=False)
    generator = torch.Generator().manual_seed(3)
    full = _batch(generator, torch.full((BATCH,), SEQ))
    short = _batch(generator, torch.randint(1, SEQ, (BATCH,), generator=generator))
    return ours, official, full, short


def _set_tasks(ours, official, contrastive, transfer):
    ours.gct_weights = {stream: GCT_WEIGHTS[stream] if contrastive else 0.0 for stream in STREAMS}
    ours.stt_weight = 1.0 if transfer else 0.0
    official.use_con, official.use_guide = contrastive, transfer


@contextlib.contextmanager
def _tasks(pair, contrastive=False, transfer=False):
    ours, official, _, _ = pair
    _set_tasks(ours, official, contrastive, transfer)
    try:
        yield
    finally:
        _set_tasks(ours, official, False, False)


def _grads(model):
    return {name: p.grad for name, p in model.named_parameters()}


def _backward(pair, batch):
    """Train mode, every dropout 0: both losses' gradients -> ({name: grad} ours, official)."""
    ours, official, _, _ = pair
    for model in (ours, official):
        model.zero_grad(set_to_none=True)
        model.train()
    try:
        ours.calculate_loss(batch).backward()
        official.calculate_loss(batch).backward()
    finally:
        ours.eval(), official.eval()
    grads = _grads(ours), _grads(official)
    ours.zero_grad(set_to_none=True), official.zero_grad(set_to_none=True)
    return grads


def test_weight_copy_maps_every_parameter_the_losses_and_the_beam_read(pair):
    ours, official, _, _ = pair
    names = _weight_names(ours, official)
    mapped = {name for name, *_ in names}
    assert {name for name in dict(ours.named_parameters()) if not name.startswith(UNMAPPED_OURS)} == mapped
    assert official.peer["semantic"].trm.encoder is official.peer["behaviour"].trm.encoder  # one shared encoder
    official_mapped = {name for _, _, name, _ in names} | {name for *_, name in _token_types()}
    left = set(dict(official.named_parameters())) - official_mapped
    assert all(name.split(".", 2)[2].startswith(UNMAPPED_OFFICIAL) for name in left), sorted(left)
    # every leaf of both official trees holds an item: its unconstrained beam (Trm4Rec.predict) meets no code that
    # our constrained one could not (PARTS: official unconstrained; README: ours constrained to existing items)
    for stream in STREAMS:
        assert (getattr(official, f"{stream}_code_to_item") >= 1).all()


def test_weight_copy_gives_the_official_loss_in_eval_and_in_train_mode(pair):
    """Both auxiliary tasks off (the released script's setting): the two trees' cross-entropies over the
    first-level nodes and the parent's children, summed over the streams."""
    ours, official, full, _ = pair
    with torch.no_grad():
        eval_mode = ours.calculate_loss(full).item(), official.calculate_loss(full).item()
        ours.train(), official.train()
        try:
            train_mode = ours.calculate_loss(full).item(), official.calculate_loss(full).item()
        finally:
            ours.eval(), official.eval()
    assert eval_mode[0] == pytest.approx(eval_mode[1], rel=1e-5, abs=1e-5)
    assert train_mode[0] == pytest.approx(train_mode[1], rel=1e-5, abs=1e-5)
    assert train_mode[0] == pytest.approx(eval_mode[0], rel=1e-5)  # dropout 0: nothing else differs in training


def test_weight_copy_gives_the_official_gradients(pair):
    """Every gradient of ours equals its official counterpart's (rows that have none get none); the official
    token-type row, folded into our positions, gets the sum of its stack's position gradients."""
    ours, official, full, _ = pair
    mine, theirs = _backward(pair, full)

    def norm(grads, leave_out=()):
        return torch.sqrt(sum((g.double() ** 2).sum() for name, g in grads.items()
                              if g is not None and name not in leave_out)).item()

    # the last item's semantic row: the official BERT padding_idx, without a gradient there (the next test)
    last = mine["item_embeddings.semantic.weight"][N_ITEMS - 1].clone()
    assert last.abs().max() > 0
    mine["item_embeddings.semantic.weight"][N_ITEMS - 1] = 0
    # the official token-type rows are extra parameters (folded into our positions): out of its total
    token_types = {name for *_, name in _token_types()}
    assert norm(mine) > 0 and norm(mine) == pytest.approx(norm(theirs, token_types), rel=1e-4)
    covered = {name: torch.zeros(len(p), dtype=torch.bool) for name, p in ours.named_parameters()}
    for name, rows, official_name, official_rows in _weight_names(ours, official):
        covered[name][rows if rows is not None else slice(None)] = True
        grad, official_grad = mine[name], theirs[official_name]
        if official_grad is None:  # the contrastive projections, task off
            assert grad is None or grad.abs().max() == 0, name
            continue
        official_grad = _rows(official_grad, official_rows)
        scale = official_grad.abs().max().item()
        torch.testing.assert_close(_rows(grad, rows), official_grad, rtol=1e-3, atol=1e-4 * scale + 1e-7, msg=name)
    for name, rows in covered.items():  # rows without a counterpart: ours' padding items, EOS, spare positions
        assert mine[name] is None or mine[name][~rows].abs().sum() == 0, name
    for _, positions, token_type in _token_types():
        torch.testing.assert_close(theirs[token_type][0], theirs[positions].sum(0), rtol=1e-4, atol=1e-7)
    word = theirs["peer.behaviour.trm.encoder.embeddings.word_embeddings.weight"]
    assert word[N_ITEMS - 1].abs().max() == 0  # the official padding row: no padding in full histories
    for name in theirs:
        if name.split(".", 2)[2].startswith(UNMAPPED_OFFICIAL):
            assert theirs[name] is None or theirs[name].abs().max() == 0, name


def test_the_official_semantic_row_of_the_last_item_is_berts_padding_row(pair):
    """NOT a documented deviation (found by this comparison): the official encoder's BertConfig takes pad_token_id =
    src_pad = src_voc_size - 1 = 2 item_num (HF_Model.py:35, 40-41; src_voc_size = 2 item_num + 1,
    Trm4Rec_trainer.py:52), which is also the semantic stream's row of the last item (official id item_num - 1,
    shifted by item_num + 1 at HF_Model.py:110; the padding the official inputs use is item_num,
    generate_training_batches.py:28). Hugging Face's BertEmbeddings makes it nn.Embedding's padding_idx, which
    BertPreTrainedModel._init_weights zeroes and autograd never updates: in the official module that item reads as a
    zero ID embedding in the semantic stream, for ever. Ours (recbole_genrec/model/eager.py, `item_embeddings`:
    padding_idx 0, every item row N(0, 0.02)) trains it. The copy above gives ours the zero row, so the losses agree;
    the gradients differ on this one row only."""
    ours, official, full, _ = pair
    word = official.peer["behaviour"].trm.encoder.embeddings.word_embeddings
    last = 2 * official.official_item_num  # the semantic row of our item N_ITEMS - 1
    assert word.padding_idx == last == word.num_embeddings - 3 and word.weight[last].abs().max() == 0
    assert (full["item_id_list"] == N_ITEMS - 1).any()  # the last item is in the histories
    mine, theirs = _backward(pair, full)
    assert theirs["peer.behaviour.trm.encoder.embeddings.word_embeddings.weight"][last].abs().max() == 0
    assert mine["item_embeddings.semantic.weight"][N_ITEMS - 1].abs().max() > 0


def test_weight_copy_gives_the_official_top10(pair):
    """Each tree's beam (official Trm4Rec.predict, ours stream_beam; beam 10), the union re-scored by both trees'
    log-likelihoods (official compute_scores, ours code_log_likelihood): the same top-10 items and scores."""
    ours, official, full, _ = pair
    items, scores = ours.generate_topk(full, 10)
    official_items, official_scores = official.generate_topk(full, 10)
    assert (items > 0).all() and len({tuple(row) for row in items.tolist()}) > 1  # user-dependent lists
    assert torch.equal(items, official_items)
    torch.testing.assert_close(scores, official_scores, rtol=1e-4, atol=1e-4)


def test_contrastive_task_is_the_officials(pair):
    """With the contrastive task on, the losses agree too: the summary state L2-normalised before the projection
    (HF_Model.py:156-157) and the positive's logit first and again among the negatives (info_nce, HF_Model.py:150-152,
    169, 365-377; the official 2,048 sampled negatives are every item at this size)."""
    ours, official, full, _ = pair
    with torch.no_grad():
        base = ours.calculate_loss(full).item()
        with _tasks(pair, contrastive=True):
            total, official_total = ours.calculate_loss(full).item(), official.calculate_loss(full).item()
    assert total == pytest.approx(official_total, rel=1e-5)
    assert total - base > 1.0  # the task is on: each stream adds its weighted InfoNCE term


def test_documented_deviations_show_where_the_readme_says(pair):
    """README "Deliberate deviations", EAGER: (1) padding: the official encoder and cross-attention attend to the pad
    tokens (one learned row shared by both streams), ours masks them: on shorter histories the losses differ and
    the official padding row gets a gradient, ours' padding rows none; (2) BERT's token-type embedding (a constant
    vector added to every position) is left out: the copy above needs it folded into our positions; (3) the
    semantic-guided transfer task runs on another network (the official fairseq-style decoder, ours BERT blocks;
    not compared): on both sides it adds a positive term."""
    ours, official, full, short = pair
    with torch.no_grad():
        padded = ours.calculate_loss(short).item(), official.calculate_loss(short).item()
    assert abs(padded[0] - padded[1]) > 1e-3
    mine, theirs = _backward(pair, short)
    assert theirs["peer.behaviour.trm.encoder.embeddings.word_embeddings.weight"][N_ITEMS - 1].abs().max() > 0
    for stream in STREAMS:
        assert mine[f"item_embeddings.{stream}.weight"][0].abs().max() == 0
    # (2) without the fold, the encoder's inputs are not the official ones
    positions = ours.encoder.encoder_positions.weight
    token_type = official.peer["behaviour"].trm.encoder.embeddings.token_type_embeddings.weight[0]
    with torch.no_grad():
        assert token_type.abs().max() > 0
        folded = ours.calculate_loss(full).item()
        positions -= token_type
        try:
            unfolded = ours.calculate_loss(full).item()
        finally:
            positions += token_type
        assert ours.calculate_loss(full).item() == pytest.approx(folded, rel=1e-6)
        assert abs(unfolded - official.calculate_loss(full).item()) > 1e-3
        # (3) the transfer task: other classes, a positive term on each side
        from lib.transformer.decoder import TransformerDecoder

        assert type(official.peer["behaviour"].trans_d_rec) is TransformerDecoder and ours.transfer.style == "bert"
        base = ours.calculate_loss(full).item(), official.calculate_loss(full).item()
        with _tasks(pair, transfer=True):
            guided = ours.calculate_loss(full).item(), official.calculate_loss(full).item()
    assert guided[0] > base[0] and guided[1] > base[1]
