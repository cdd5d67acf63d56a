"""ColaRec: LightGCN GIDs on a k-means tree, item-ID + content encoder inputs, generation + BPR + contrastive."""
import numpy as np
import pytest
import torch

from recbole_genrec.quick_start import prepare_run

from conftest import TINY_TIGER, check_run_and_reload, trained_model

# 287 items, 8 branches: 3 levels
TINY_COLAREC = {
    **{key: TINY_TIGER[key] for key in ("d_model", "num_heads", "d_kv", "d_ff", "train_batch_size", "learning_rate")},
    "cf_params": {"model": "LightGCN", "embedding_size": 8, "epochs": 2},
    "tokenizer_params": {"branches": 8, "niter": 10, "cluster_size_max": "subtree"},
    "num_encoder_layers": 1, "num_decoder_layers": 1, "beam_size": 20, "sample_item_num": 4,
}


@pytest.fixture(scope="module")
def colarec(tiny):
    return trained_model(tiny, "ColaRec", TINY_COLAREC)


def test_gids_are_unique_tree_paths_and_leaf_groups_share_their_prefix(colarec):
    model, _ = colarec
    codes = model.item_codes[1:]
    assert model.vocab_sizes == [8, 8, 8] and len(torch.unique(codes, dim=0)) == len(codes)
    for item in range(1, model.n_items):
        start, size = model.leaf_start[item], model.leaf_size[item]
        group = model.leaf_order[start:start + size]
        assert item in group.tolist()
        assert torch.all(model.item_codes[group, :-1] == model.item_codes[item, :-1])


def test_user_side_samples_in_training_and_reads_newest_first_in_evaluation(colarec):
    model, interaction = colarec
    history, lengths = model.history(interaction)
    model.eval()
    newest = model.user_items(interaction)
    for row in range(len(history)):
        n = int(lengths[row])
        assert newest[row, :n].tolist() == history[row, :n].flip(0).tolist() and not newest[row, n:].any()
    model.train()
    sampled = model.user_items(interaction)
    model.eval()
    assert sampled.shape[1] == 4
    for row in range(len(history)):
        n = int(lengths[row])
        chosen = [item for item in sampled[row].tolist() if item]
        assert len(chosen) == min(n, 4) and set(chosen) <= set(history[row, :n].tolist())
        assert not any(sampled[row, len(chosen):])  # real items first


def test_encoder_input_is_task_then_id_and_content_per_item_then_eos(colarec):
    model, _ = colarec  # the random-init path: one content token (the projected text embedding) per item
    items = torch.tensor([[5, 9, 0], [7, 0, 0], [0, 0, 0]])
    slot_items, slot_parts, mask, eos = model.encoder_layout(items)
    assert slot_items.tolist()[0] == [0, 5, 5, 9, 9, 0] and slot_parts.tolist()[0] == [-1, 0, 1, 0, 1, -1]
    assert eos.tolist() == [5, 3, 1] and mask.tolist()[2] == [True, True] + [False] * 4
    with torch.no_grad():
        memory, mask, state = model.encode_items(items, task=0)
    assert torch.equal(state, memory[torch.arange(3), eos])  # the representation: the encoder state at EOS
    model.max_encoder_tokens = 4  # the whole input is cut before the EOS, as the official tokenizer
    slot_items, _, mask, eos = model.encoder_layout(items)
    model.max_encoder_tokens = 256
    assert slot_items.tolist()[0] == [0, 5, 5, 0] and eos.tolist() == [3, 3, 1]


def test_per_level_code_embeddings_and_heads_and_a_normalised_beam_step(colarec):
    model, interaction = colarec
    assert [head.out_features for head in model.code_heads] == [9, 9, 9]  # 8 codes + the unused class (official 33)
    assert [table.num_embeddings for table in model.code_embeddings] == [9, 9, 9]
    with torch.no_grad():
        memory, mask, _ = model.encode_items(model.user_items(interaction), 0)
        state = model.backbone.start_decoding(memory, mask)
        tokens = torch.zeros(len(memory), dtype=torch.long)
        for level in range(3):
            scores, state = model.decoding_step(tokens, state)
            finite = torch.isfinite(scores)
            allowed = torch.zeros(model.vocab.size, dtype=torch.bool)
            allowed[[model.vocab.pad_id, *model.vocab.level_range(level)]] = True
            assert torch.all(finite == allowed) and torch.allclose(scores.logsumexp(-1), torch.zeros(len(scores)), atol=1e-5)
            tokens = model.vocab.level_start(level) + scores[:, model.vocab.level_range(level)].argmax(-1)


def test_negatives_avoid_the_users_training_history_and_the_positives_leaf(colarec):
    model, _ = colarec
    history = {(int(u), int(i)) for u, i in zip(model.history_keys // model.n_items, model.history_keys % model.n_items)}
    users = torch.tensor(sorted({u for u, _ in history}) * 20)
    positives = torch.tensor([min(i for u2, i in history if u2 == u) for u in users.tolist()])
    negatives = model.sample_negatives(users, positives)
    assert not any((u, i) in history for u, i in zip(users.tolist(), negatives.tolist()))
    assert not (model.item_codes[negatives, :-1] == model.item_codes[positives, :-1]).all(1).any()
    assert negatives.min() >= 1 and len(set(negatives.tolist())) > 20  # still spread over the catalogue


def test_contrastive_positive_is_another_item_of_the_leaf_unless_alone(colarec):
    """As the official cid_neg_dict[iid]['sec'] (the item's cluster mates) with its fallback to the item itself when
    that set is empty: never the item when its leaf has other items, every other item reachable."""
    model, _ = colarec
    items = torch.arange(1, model.n_items)
    sizes = model.leaf_size[items]
    assert (sizes > 1).any() and (sizes == 1).any()  # the fixture has shared and lone leaves
    draws = model.contrastive_positives(items.repeat(200)).view(200, -1)
    shared = sizes > 1
    assert not (draws[:, shared] == items[shared]).any()
    assert torch.all(draws[:, ~shared] == items[~shared])
    assert torch.all(model.item_codes[draws, :-1] == model.item_codes[items, :-1])  # same leaf cluster
    for item in items[shared][:20].tolist():
        start, size = model.leaf_start[item], model.leaf_size[item]
        mates = set(model.leaf_order[start:start + size].tolist()) - {item}
        assert set(draws[:, item - 1].tolist()) == mates  # uniform over the others: each one drawn


def test_item_users_are_users_of_the_items_training_interactions(tiny):
    from recbole_genrec.representation.collaborative import training_interactions

    config, _, model, train_data, _, _ = prepare_run("ColaRec", "tiny-beauty", None, tiny(**TINY_COLAREC))
    assert config["sample_user_num"] == 1 and model.user_id_embedding.num_embeddings == train_data._dataset.user_num
    pairs = training_interactions(train_data._dataset)
    users_of = {}
    for user, item in zip(pairs["user_id"].tolist(), pairs["item_id"].tolist()):
        users_of.setdefault(item, set()).add(user)
    items = torch.arange(1, model.n_items).repeat(20)
    for draws in (1, 3):  # the recipe's one user, and draws without replacement where an item has enough users
        model.sampled_users = draws
        sampled = model.sample_item_users(items)
        assert sampled.shape == (len(items), draws)
        for item, row in zip(items.tolist(), sampled.tolist()):
            if item not in users_of:  # never in training: user 0, as the official fallback
                assert row == [0] * draws
                continue
            assert set(row) <= users_of[item]
            if len(users_of[item]) >= draws:
                assert len(set(row)) == draws
    model.sampled_users = 1
    assert len(users_of) < model.n_items - 1  # cold items exist: the fallback above was exercised
    assert any(len(users) < 3 for users in users_of.values())  # and so were draws with replacement


def test_only_the_contrastive_positive_reads_a_user_and_inference_never_does(colarec):
    """The contrastive positive's encoding holds, right before its EOS, the ID embedding of one user of that item's
    training interactions (official ty='item' layout); the positive and the negative hold none (official base
    collate_fn), nor does the user side; generation never reads the user table."""
    from unittest import mock

    model, interaction = colarec
    pairs = set(zip((model.history_keys // model.n_items).tolist(), (model.history_keys % model.n_items).tolist()))
    calls, inputs = [], []
    encode_items, encode = model.encode_items, model.backbone.encode_embeddings

    def record_items(items, task, users=None):
        calls.append((items, task, users))
        return encode_items(items, task, users)

    model.train()
    with mock.patch.object(model, "encode_items", side_effect=record_items), \
            mock.patch.object(model.backbone, "encode_embeddings",
                              side_effect=lambda hidden, mask: encode(inputs.append((hidden, mask)) or hidden, mask)):
        with torch.no_grad():
            model.calculate_loss(interaction)
    model.eval()
    assert [users is None for _, _, users in calls] == [True, True, False]  # user side, positive + negative, aug
    items, task, users = calls[2]
    assert task == 1 and users.shape == (len(interaction), 1)
    trained = {item for _, item in pairs}
    for item, (user,) in zip(items[:, 0].tolist(), users.tolist()):
        assert (user, item) in pairs if item in trained else user == 0  # user 0: an item never in training
    assert any(item in trained for item in items[:, 0].tolist())
    hidden, mask = inputs[2]
    eos = mask.sum(1) - 1
    rows = torch.arange(len(hidden))
    assert torch.all(eos == 4)  # task, ID, content, user, EOS
    assert torch.equal(hidden[rows, eos - 1], model.user_id_embedding.weight[users[:, 0]])
    assert torch.equal(hidden[rows, 1], model.item_id_embedding.weight[items[:, 0]])
    assert torch.all(inputs[1][1].sum(1) == 4)  # positive and negative: task, ID, content, EOS

    with mock.patch.object(model.user_id_embedding, "forward", side_effect=AssertionError("user table read")), \
            mock.patch.object(model, "sample_item_users", side_effect=AssertionError("users sampled")):
        items, _ = model.generate_topk(interaction, 10)
    assert items.shape == (len(interaction), 10)


def test_generation_drops_history_items_and_returns_distinct_items(colarec):
    model, interaction = colarec
    with torch.no_grad():
        items, scores = model.generate_topk(interaction, 10)
    history, _ = model.history(interaction)
    assert items.shape == (len(interaction), 10) and torch.all(items >= 1)
    assert not (items.unsqueeze(2) == history.unsqueeze(1)).any()
    assert all(len(set(row.tolist())) == 10 for row in items) and torch.all(scores[:, :-1] >= scores[:, 1:])


def test_loss_has_gradients_for_ids_content_and_backbone(tiny):
    _, _, model, train_data, _, _ = prepare_run("ColaRec", "tiny-beauty", None, tiny(**TINY_COLAREC))
    model.train()
    loss = model.calculate_loss(next(iter(train_data)))
    loss.backward()
    assert torch.isfinite(loss)
    for parameter in (model.item_id_embedding.weight, model.content_projection.weight, model.backbone.embedding.weight,
                      model.task_embedding.weight, model.user_id_embedding.weight, *model.code_heads.parameters(),
                      *model.code_embeddings.parameters()):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_colarec_end_to_end_and_checkpoint_reload(tiny):
    check_run_and_reload("ColaRec", "tiny-beauty", tiny(**TINY_COLAREC))


def test_colarec_needs_the_tree_tokenizer(tiny):
    with pytest.raises(ValueError, match="tokenizer` must be HKMeans"):
        prepare_run("ColaRec", "tiny-beauty", None, tiny(**{**TINY_COLAREC, "tokenizer": "RQKMeans",
                                                            "tokenizer_params": {"num_levels": 2, "codebook_size": 8}}))


# ---- the pretrained path: a local Hugging Face T5 folder (a tiny one made here; nothing is downloaded) ------------
@pytest.fixture(scope="module")
def tiny_t5_folder(tmp_path_factory):
    """A 1+1-layer T5 (d_model 16) and a word-level tokenizer over the fixture's item text, saved with
    `save_pretrained` as t5-small's folder would be."""
    import re

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    from conftest import FIXTURES

    with open(f"{FIXTURES}/tiny-beauty/tiny-beauty.item", encoding="utf-8") as item_file:
        words = sorted(set(re.findall(r"\w+|[^\w\s]", item_file.read().lower())))
    vocab = {word: index for index, word in enumerate(["<pad>", "</s>", "<unk>"] + words)}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.normalizer = normalizers.Lowercase()
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(
        vocab_size=len(vocab), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2,
        feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    folder = tmp_path_factory.mktemp("tiny-t5")
    t5.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder), t5, tokenizer


@pytest.fixture(scope="module")
def pretrained_colarec(tiny, tiny_t5_folder):
    folder, _, _ = tiny_t5_folder
    config, _, model, train_data, _, test_data = prepare_run("ColaRec", "tiny-beauty", None,
                                                             tiny(**TINY_COLAREC, pretrained_t5_path=folder))
    interaction, _, _, _ = next(iter(test_data))
    return config, model, train_data, interaction


def test_colarec_starts_from_the_local_t5_weights(pretrained_colarec, tiny_t5_folder):
    from recbole_genrec.model.layers.hf_t5 import parameter_names

    _, t5, _ = tiny_t5_folder
    _, model, _, _ = pretrained_colarec
    ours, theirs = dict(model.backbone.named_parameters()), dict(t5.named_parameters())
    names = parameter_names(1, 1)
    assert len(names) == len(ours) and model.backbone.d_model == 16 and model.eos_token == 1
    for our_name, their_name in names.items():  # every backbone weight, encoder and decoder, is the saved one
        assert torch.equal(ours[our_name], theirs[their_name]), our_name
    assert model.reads_word_pieces and not hasattr(model, "content_projection")


def test_pretrained_colarec_reads_the_history_items_word_pieces_never_the_targets(pretrained_colarec,
                                                                                   tiny_t5_folder):
    from recbole_genrec.representation import read_item_text

    _, _, tokenizer = tiny_t5_folder
    config, model, train_data, interaction = pretrained_colarec
    dataset = train_data._dataset
    texts = read_item_text(f"{config['data_path']}/tiny-beauty.item", config["text_fields"],
                           list(dataset.field2id_token[dataset.iid_field]))
    expected = tokenizer(texts[7], add_special_tokens=False)["input_ids"][:29]
    assert model.item_text_tokens.shape[1] == 29 and len(expected) == 29
    assert model.item_text_tokens[7].tolist() == expected  # item 7's text, as the T5 tokenizer cuts it

    items = model.user_items(interaction)
    slot_items, slot_parts, _, eos = model.encoder_layout(items)
    encoder_inputs = []
    encode = model.backbone.encode_embeddings
    model.backbone.encode_embeddings = lambda hidden, mask: encode(encoder_inputs.append(hidden) or hidden, mask)
    try:
        with torch.no_grad():
            model.encode_items(items, 0)
    finally:
        del model.backbone.encode_embeddings
    hidden = encoder_inputs[0]
    content, ids = slot_parts >= 1, slot_parts == 0
    pieces = model.item_text_tokens[slot_items, (slot_parts - 1).clamp(min=0)]
    assert content.any() and torch.equal(hidden[content], model.backbone.embedding.weight[pieces[content]])
    assert torch.equal(hidden[ids], model.item_id_embedding.weight[slot_items[ids]])
    history, _ = model.history(interaction)
    target = interaction[config["ITEM_ID_FIELD"]]
    for row in range(len(items)):
        read = set(slot_items[row][slot_items[row] > 0].tolist())
        assert read == set(items[row][items[row] > 0].tolist()) and read <= set(history[row].tolist())
        if int(target[row]) not in history[row].tolist():
            assert int(target[row]) not in read
    assert int(slot_parts.max()) == 29 and int(eos.max()) <= model.max_encoder_tokens - 1


def test_pretrained_colarec_trains_and_generates(pretrained_colarec):
    _, model, train_data, interaction = pretrained_colarec
    model.train()
    loss = model.calculate_loss(next(iter(train_data)))
    loss.backward()
    assert torch.isfinite(loss) and model.backbone.embedding.weight.grad.abs().sum() > 0  # word pieces are read
    model.eval()
    items, _ = model.generate_topk(interaction, 10)
    assert items.shape == (len(interaction), 10) and torch.all(items >= 1)


def test_pretrained_t5_path_must_be_a_t5_folder(tiny, tmp_path):
    from unittest import mock

    # refused before any work: the CF model is never trained
    with mock.patch("recbole_genrec.model.colarec.item_cf_embeddings", side_effect=AssertionError("work started")):
        with pytest.raises(ValueError, match="pretrained_t5_path '.*missing' is not a folder with a saved T5"):
            prepare_run("ColaRec", "tiny-beauty", None,
                        tiny(**TINY_COLAREC, pretrained_t5_path=str(tmp_path / "missing")))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot load a T5 and its tokenizer"):
        prepare_run("ColaRec", "tiny-beauty", None, tiny(**TINY_COLAREC, pretrained_t5_path=str(tmp_path)))


def test_lightgcn_trains_on_every_training_interaction_first_items_included(tiny):
    from recbole.sampler import Sampler

    from recbole_genrec.representation.collaborative import training_interactions

    _, _, model, train_data, _, _ = prepare_run("ColaRec", "tiny-beauty", None, tiny(**TINY_COLAREC))
    split = train_data._dataset
    inter = split.inter_feat
    targets = set(zip(inter["user_id"].tolist(), inter["item_id"].tolist()))
    history = {(user, item) for user, row in zip(inter["user_id"].tolist(), inter["item_id_list"].tolist())
               for item in row if item}
    first_rows = inter["item_length"] == 1
    firsts = set(zip(inter["user_id"][first_rows].tolist(), inter["item_id_list"][first_rows, 0].tolist()))
    assert firsts - targets  # some users' first item is no row's target: a (user, target) graph would miss it

    pairs = training_interactions(split)
    edges = set(zip(pairs["user_id"].tolist(), pairs["item_id"].tolist()))
    assert len(edges) == len(pairs) and edges == targets | history and firsts <= edges
    graph = split.copy(pairs)
    matrix = graph.inter_matrix(form="coo")
    assert matrix.nnz == len(edges) and set(zip(matrix.row.tolist(), matrix.col.tolist())) == edges
    used = Sampler(["train"], [graph], "uniform").used_ids["train"]  # the BPR negatives avoid these
    assert all(item in used[user] for user, item in firsts)
    assert torch.equal(model.history_keys, pairs["user_id"] * model.n_items + pairs["item_id"])


def test_subtree_caps_bound_each_cluster_by_its_subtree_leaves_not_an_even_share():
    import numpy as np

    from recbole_genrec.tokenization import build_tokenizer

    # 100 items: one blob of 70 and three of 10; 4 branches, 4 levels (64 < 100 <= 256 leaves)
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    vectors = np.vstack([np.zeros((1, 2)), centres[np.repeat([0, 1, 2, 3], [70, 10, 10, 10])]
                         + rng.normal(scale=0.5, size=(100, 2))]).astype(np.float32)
    params = {"branches": 4, "niter": 20, "collision": "none"}
    subtree = build_tokenizer("HKMeans", {**params, "cluster_size_max": "subtree"}).fit(vectors, seed=0).codes[1:]
    even = build_tokenizer("HKMeans", params).fit(vectors, seed=0).codes[1:]
    assert len(torch.unique(subtree, dim=0)) == 100 and subtree.shape[1] == 4
    for depth, cap in enumerate([64, 16, 4]):  # hierarchical_cluster.py: size_max = branches ** (levels - level)
        _, sizes = torch.unique(subtree[:, :depth + 1], dim=0, return_counts=True)
        assert sizes.max() <= cap
    assert torch.bincount(subtree[:, 0]).max() > 25  # the blob's clusters may outgrow an even share...
    assert torch.bincount(even[:, 0]).max() <= 25  # ...which EAGER's default keeps: ceil(100 / 4)
    with pytest.raises(ValueError, match="cluster_size_max must be one of"):
        build_tokenizer("HKMeans", {**params, "cluster_size_max": "1024"})


def test_cold_items_keep_their_lightgcn_vectors_not_one_zero_point(tiny):
    """As the official hierarchical_cluster.py, which clusters every row of its CF table (ColaRec.yaml:
    cf_untrained_items: model): items never in the training split keep LightGCN's own output, distinct points,
    instead of one shared zero vector that puts them all in one cluster; the trained rows are the same."""
    from recbole_genrec.representation import item_cf_embeddings

    config, dataset, model, train_data, _, _ = prepare_run("ColaRec", "tiny-beauty", None, tiny(**TINY_COLAREC))
    assert config["cf_untrained_items"] == "model"
    kept = item_cf_embeddings(config, dataset, train_data._dataset)
    config["cf_untrained_items"] = "zero"
    zeroed = item_cf_embeddings(config, dataset, train_data._dataset)
    cold = np.flatnonzero(~train_data._dataset.train_item_mask)[1:]  # row 0 is the padding
    assert len(cold) >= 3 and not zeroed[cold].any() and not kept[0].any()
    assert np.linalg.norm(kept[cold], axis=1).min() > 0 and len(np.unique(kept[cold], axis=0)) == len(cold)
    trained = np.flatnonzero(train_data._dataset.train_item_mask)
    assert np.array_equal(kept[trained], zeroed[trained])
    # the model's GIDs come from the kept rows: its cold items spread over several first-level clusters; from the
    # zero rows they all fall in one (filling leaves of it up to their size cap)
    cold = torch.from_numpy(cold)
    assert len(torch.unique(model.item_codes[cold, 0])) > 1
    zero_codes = type(model).build_semantic_ids(config, dataset, train_data._dataset).codes
    assert len(torch.unique(zero_codes[cold, 0])) == 1
