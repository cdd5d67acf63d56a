"""benchmarks/official_modules/colarec.py: the official ColaRec module inside our pipeline (tiny-beauty, one pass).

Needs the official checkout (OFFICIAL_COLAREC_DIR=/path/to/Junewang0614/ColaRec) and transformers 4.x (the official
decoding reads tuple past_key_values); skipped otherwise, as in CI."""
import contextlib
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
def official_class():
    """(the adapter module, the swapped class), built once per module: the class registers itself in
    recbole_genrec.model.colarec for checkpoint loading, so a second build would replace the first."""
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) != 4:
        pytest.skip(f"the official module needs transformers 4.x, found {transformers.__version__}")
    spec = importlib.util.spec_from_file_location(
        "official_colarec", os.path.join(ROOT, "benchmarks", "official_modules", "colarec.py"))
    adapter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(adapter)
    return adapter, adapter.swapped_class(CHECKOUT)


@pytest.fixture(scope="module")
def swapped(tiny, official_class):
    adapter, cls = official_class

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


# ---- weight-copy equivalence -----------------------------------------------------------------------------------
# Our ColaRec and the swapped class, each built by its own constructor on one synthetic catalogue (no dataset files:
# the GIDs, the item text vectors and the training pairs are given), every weight of the official module copied into
# ours by name; the random draws (the negative, the contrastive positive, its sampled user, the training history
# sample) are drawn once by our sampling code and handed to both sides.
N_ITEMS, N_USERS, SEQ, TEXT_DIM, BATCH = 60, 24, 10, 24, 16
EQUIVALENCE = {
    "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "LIST_SUFFIX": "_list",
    "ITEM_LIST_LENGTH_FIELD": "item_length", "NEG_PREFIX": "neg_", "MAX_ITEM_LIST_LENGTH": SEQ,
    "device": torch.device("cpu"), "beam_size": 20, "pretrained_t5_path": "", "max_encoder_tokens": 256,
    "max_text_tokens": 30, "d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64, "num_encoder_layers": 1,
    "num_decoder_layers": 1, "dropout": 0.1, "sample_item_num": 6, "sample_user_num": 1,
}


class _Dataset:
    """What the two constructors read of a RecBole dataset: the semantic IDs, the sizes and the training rows."""
    uid_field, iid_field, item_list_length_field = "user_id", "item_id", "item_length"

    def __init__(self, semantic_ids, inter_feat):
        self.semantic_ids, self.inter_feat = semantic_ids, inter_feat
        self.item_num, self.user_num = N_ITEMS, N_USERS
        self.config = {"LIST_SUFFIX": "_list"}

    def num(self, field):
        return self.item_num if field == self.iid_field else self.user_num


def _weight_names(ours):
    """(our parameter, its rows, the swapped model's parameter, its rows) for every parameter of ours; rows None =
    all. The official `shared` word table keeps two rows more than ours (the `atom_pad` / `atom_user_pad`
    placeholders, which the official forward overwrites with ID embeddings): rows 0-1 (PAD, EOS) are ours."""
    from recbole_genrec.model.colarec import ITEM_TASK, USER_TASK
    from recbole_genrec.model.layers.hf_t5 import parameter_names

    names = [(f"backbone.{mine}", None, f"official.{theirs}", None)
             for mine, theirs in parameter_names(len(ours.backbone.encoder_layers),
                                                 len(ours.backbone.decoder_layers)).items()
             if mine != "embedding.weight"]
    names += [("backbone.embedding.weight", None, "official.shared.words.weight", slice(0, 2)),
              # the official prompt table: row 1 the user task, row 0 the item task (models.py get_prompt_embed)
              ("task_embedding.weight", slice(USER_TASK, USER_TASK + 1), "official.prompt.weight", slice(1, 2)),
              ("task_embedding.weight", slice(ITEM_TASK, ITEM_TASK + 1), "official.prompt.weight", slice(0, 1)),
              ("item_id_embedding.weight", None, "official.atomid_embed.weight", None),
              ("user_id_embedding.weight", None, "official.atomid_user_embed.weight", None)]
    for w in ("weight", "bias"):
        names.append((f"content_projection.{w}", None, f"official.shared.projection.{w}", None))
        for level in range(len(ours.code_heads)):
            names.append((f"code_heads.{level}.{w}", None, f"official.centroids.{level}.{w}", None))
    for level in range(len(ours.code_embeddings)):
        names.append((f"code_embeddings.{level}.weight", None, f"official.cid_embed_list.{level}.weight", None))
    return names


def _rows(tensor, rows):
    return tensor if rows is None else tensor[rows]


def _no_dropout(model):
    """Every dropout of a model at 0 (nn.Dropout modules and the attention's float rates, ours and HF T5's)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0


@pytest.fixture(scope="module")
def pair(official_class):
    """(ours, the swapped model, a training / evaluation batch), ours holding the official module's weights."""
    import numpy as np
    from recbole.data.interaction import Interaction

    from recbole_genrec.model import colarec
    from recbole_genrec.tokenization import SemanticIds

    adapter, cls = official_class
    generator = torch.Generator().manual_seed(0)
    # 59 items under 16 two-code prefixes (leaf clusters of several items), the last code the index in the leaf
    leaves = torch.randperm(4 * 4 * 8, generator=generator)[:N_ITEMS - 1]
    codes = torch.stack([leaves // 32, leaves // 8 % 4, leaves % 8], 1)
    codes = torch.cat([torch.zeros(1, 3, dtype=torch.long), codes])  # row 0: padding
    semantic_ids = SemanticIds(codes=codes, vocab_sizes=[8, 8, 8])
    lengths = torch.randint(2, SEQ + 1, (BATCH,), generator=generator)
    lengths[:4] = SEQ  # some full histories
    history = torch.randint(1, N_ITEMS, (BATCH, SEQ), generator=generator) * (torch.arange(SEQ) < lengths[:, None])
    batch = Interaction({"user_id": torch.arange(1, BATCH + 1), "item_id": torch.randint(1, N_ITEMS, (BATCH,),
                                                                                         generator=generator),
                         "item_id_list": history, "item_length": lengths})
    dataset = _Dataset(semantic_ids, batch)  # the batch's rows are the training split
    text = np.random.RandomState(0).randn(N_ITEMS, TEXT_DIM).astype("float32")
    config = dict(EQUIVALENCE, generation_weight=adapter.GENERATE_LAMDA, contrastive_weight=adapter.CONTENT_CL_LAMDA)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(colarec, "item_text_embeddings", lambda config, dataset: text)
        torch.manual_seed(1)
        ours = colarec.ColaRec(config, dataset)
        swapped = cls(config, dataset)
    assert type(ours) is colarec.ColaRec and type(swapped) is cls
    theirs, mine = dict(swapped.named_parameters()), dict(ours.named_parameters())
    with torch.no_grad():
        for name, rows, official, official_rows in _weight_names(ours):
            _rows(mine[name], rows).copy_(_rows(theirs[official], official_rows))
    for model in (ours, swapped):
        _no_dropout(model)
    # the draws, by our sampling code (the swapped class keeps ours: PARTS), fed to both sides
    torch.manual_seed(2)
    positive, users = batch["item_id"], batch["user_id"]
    negative, aug = ours.sample_negatives(users, positive), ours.contrastive_positives(positive)
    aug_users = ours.sample_item_users(aug)  # [B, sample_user_num = 1]
    for model in (ours, swapped):
        model.sample_negatives = lambda users, positive: negative
        model.contrastive_positives = lambda positive: aug
    ours.sample_item_users = lambda items: aug_users
    swapped.item_user = lambda items: aug_users[:, 0]  # the adapter's one official user slot
    ours.train()
    sample = ours.user_items(batch)  # the training history sample: up to 6 history items, random order
    ours.eval(), swapped.eval()
    return ours, swapped, batch, sample


@contextlib.contextmanager
def _training(pair):
    """Both models in train mode (every dropout 0), reading the same training history sample."""
    ours, swapped, _, sample = pair
    for model in (ours, swapped):
        model.train()
        model.user_items = lambda interaction: sample
    try:
        yield
    finally:
        for model in (ours, swapped):
            model.eval()
            del model.user_items


def test_weight_copy_maps_every_parameter_of_both_models(pair):
    """Every parameter of ours has its official counterpart and every official parameter is copied, all of it but
    the two placeholder rows of `shared` that the official forward overwrites with ID embeddings (PARTS)."""
    ours, swapped, _, _ = pair
    names = _weight_names(ours)
    assert {name for name, *_ in names} == dict(ours.named_parameters()).keys()
    assert {official for _, _, official, _ in names} == dict(swapped.named_parameters()).keys()
    words = swapped.official.shared.words.weight
    assert words.shape[0] == ours.backbone.embedding.weight.shape[0] + 2
    assert sum(p.numel() for p in swapped.parameters()) - sum(p.numel() for p in ours.parameters()) == \
        2 * words.shape[1]


def test_weight_copy_gives_the_official_loss_in_eval_and_in_train_mode(pair):
    ours, swapped, batch, _ = pair
    with torch.no_grad():
        eval_ours, eval_official = ours.calculate_loss(batch).item(), swapped.calculate_loss(batch).item()
        with _training(pair):
            train_ours, train_official = ours.calculate_loss(batch).item(), swapped.calculate_loss(batch).item()
    assert eval_ours == pytest.approx(eval_official, rel=1e-5, abs=1e-5)
    assert train_ours == pytest.approx(train_official, rel=1e-5, abs=1e-5)
    assert train_ours != pytest.approx(eval_ours, rel=1e-4)  # the training sample is another history read


def test_weight_copy_gives_the_official_gradients(pair):
    """Train mode, dropout 0: the gradient of every parameter of ours equals its official counterpart's, and the
    placeholder rows of the official word table get none (the forward overwrites them)."""
    ours, swapped, batch, _ = pair
    for model in (ours, swapped):
        model.zero_grad(set_to_none=True)
    with _training(pair):
        ours.calculate_loss(batch).backward()
        swapped.calculate_loss(batch).backward()
    mine, theirs = dict(ours.named_parameters()), dict(swapped.named_parameters())

    def norm(model):
        return torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))

    assert norm(ours) > 0 and norm(ours).item() == pytest.approx(norm(swapped).item(), rel=1e-4)
    for name, rows, official, official_rows in _weight_names(ours):
        grad, official_grad = _rows(mine[name].grad, rows), _rows(theirs[official].grad, official_rows)
        scale = official_grad.abs().max().item()
        torch.testing.assert_close(grad, official_grad, rtol=1e-3, atol=1e-4 * scale + 1e-7, msg=name)
    words = swapped.official.shared.words.weight.grad
    assert words[2:].abs().max() == 0  # atom_pad / atom_user_pad: overwritten, no gradient
    ours.zero_grad(set_to_none=True), swapped.zero_grad(set_to_none=True)


def test_weight_copy_gives_the_official_top10(pair):
    """The shared constrained beam search (beam 20, each level normalised over its 33 classes) and the official
    HF beam search with its PrefixTree, then cut_intered_prediction: the same top-10 items for every user (the
    adapter's scores are ranks, ours log-probabilities: only the items compare)."""
    ours, swapped, batch, _ = pair
    items, _ = ours.generate_topk(batch, 10)
    official, _ = swapped.generate_topk(batch, 10)
    assert (items > 0).all() and len({tuple(row) for row in items.tolist()}) > 1  # user-dependent lists
    assert torch.equal(items, official)
