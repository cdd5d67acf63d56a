"""The MQL4GRec official-module swap (benchmarks/official_modules/mql4grec.py) on the tiny multimodal fixture.

Needs the official checkout (OFFICIAL_MQL4GREC_DIR, e.g. a clone of zhaijianyang/MQL4GRec) and the transformers 4.x it
pins, with sentencepiece; skipped otherwise (CI has no checkout)."""
import contextlib
import os
import sys

import pytest
import torch

from conftest import ROOT, check_run_and_reload, trained_model
from test_mql4grec import TINY_PRETRAIN  # the tiny_mm fixture comes from conftest

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


def test_selection_decodes_the_official_beams_with_the_shared_beam_search(tiny, tiny_mm, swapped):
    """Model selection ranks with the shared beam search over the official network (selection_generate): the same
    code strings in the same order as the official HF generate + trie (official_generate) and the same sequence
    scores, so the official fusion gives the same lists; the run's first validation batch checks it again."""
    model, interaction = trained_model(tiny, "MQL4GRec", tiny_mm, dataset="tiny-mm")
    model.eval()
    with torch.no_grad():
        history, _ = model.history(interaction)
        for modality in ("text", "image"):
            official, official_scores = model.official_generate(history, modality)
            ours, scores = model.selection_generate(history, modality)
            assert ours == official and len(ours) == len(history) * model.beam_size
            torch.testing.assert_close(torch.tensor(scores), torch.tensor(official_scores), rtol=0, atol=1e-5)
        assert not model._selection_checked
        selected, _ = model.selection_topk(interaction, 10)
        assert model._selection_checked
        assert torch.equal(selected, model.generate_topk(interaction, 10)[0])


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


# ---- equivalence at equal weights -------------------------------------------------------------------------------
# Training the official module on amazon-instruments-mm costs hours per seed on a CPU (its 32k-token vocabulary), so
# the official network, loss and decoding are checked against ours at equal weights: the official T5's weights are
# copied into our MQL4GRec (recbole_genrec/model/layers/hf_t5.py's parameter map; each of our token rows from the
# official id of that token: PAD, </s>, the text and image code tokens, our prompt tokens from the official prompt
# pieces). Where the computation differs by design (README, "Deliberate deviations": the official softmax also spans
# T5's 32,100 word pieces, the official encoder input ends with </s> and its labels with </s>; and the official
# item2image prompt, re-tokenised by finetune.py, is 5 pieces where ours has 4 prompt tokens, see the adapter), the
# shared part is compared exactly (the swap's own calculate_loss and official_generate, their input and labels
# replaced by ours) and each difference is asserted on its own.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def vocabulary_map_of(model, ours):
    """Our token -> the official token id: PAD, </s>, every code token, and each prompted task's prompt_tokens
    tokens -> the last prompt_tokens pieces of the official prompt (item2image's 5 pieces start with an extra '▁')."""
    from recbole_genrec.model.mql4grec import MODALITIES, PROMPTED_TASKS

    vocabulary_map = torch.full((ours.backbone.vocab_size,), -1, dtype=torch.long)
    vocabulary_map[0], vocabulary_map[1] = model.tokenizer.pad_token_id, model.tokenizer.eos_token_id
    for modality in MODALITIES:
        vocabulary_map[ours.tokens(modality)[1:]] = model.official_ids(modality)[1:]
        assert torch.equal(vocabulary_map[ours.tokens(modality)], model.official_ids(modality))
    extra = {}
    for task in PROMPTED_TASKS:
        official = getattr(model, model.prompt_ids[task])
        vocabulary_map[ours.prompt(task, 1, "cpu")[0]] = official[len(official) - ours.prompt_length:]
        extra[task] = model.tokenizer.convert_ids_to_tokens(official[:len(official) - ours.prompt_length].tolist())
    assert (vocabulary_map >= 0).all() and len(set(vocabulary_map.tolist())) == len(vocabulary_map)
    # every code token the official vocabulary added is one of ours (all of them are in use on tiny-mm)
    assert model.t5.config.vocab_size - 32100 == ours.backbone.vocab_size - 2 - 3 * ours.prompt_length
    return vocabulary_map, extra


@pytest.fixture(scope="module")
def equal_weights(swapped, tiny, tiny_mm):
    """(official-module MQL4GRec, our MQL4GRec with its weights, our token -> official id, T5 parameter map, a
    training batch, a test batch of 16 users), on the same split and codes, dropout 0."""
    from test_official_modules_letter import copy_t5_weights

    from recbole_genrec.model.mql4grec import MQL4GRec
    from recbole_genrec.quick_start import prepare_run

    config, _, model, train_data, _, test_data = prepare_run("MQL4GRec", "tiny-mm", None,
                                                             tiny(**tiny_mm, dropout=0.0))
    ours = MQL4GRec(config, train_data._dataset)
    assert torch.equal(ours.item_codes, model.item_codes) and ours.tasks == model.tasks
    vocabulary_map, extra = vocabulary_map_of(model, ours)
    assert extra == {"item2image": ["▁"], "image2item": [], "fusionseqrec": []}
    names = copy_t5_weights(model.t5, ours.backbone, vocabulary_map, torch.Generator().manual_seed(0))
    model.eval(), ours.eval()
    return model, ours, vocabulary_map, names, next(iter(train_data)), next(iter(test_data))[0][:16]


def layouts(model, ours, vocabulary_map, eos_input=False, official_prompts=False, eos_label=False):
    """Replacements for the swap's encoder_ids / labels: by default our encoder tokens (our prompts, no </s>) as
    official ids and the official labels with the </s> term ignored; each flag puts one official choice back."""
    official_encoder_ids, official_labels = model.encoder_ids, model.labels
    eos = model.tokenizer.eos_token_id

    def encoder_ids(items, modality, task=None):
        tokens = official_encoder_ids(items, modality, task)  # official prompt, codes, </s>, padding
        if not eos_input:
            tokens = tokens.masked_fill(tokens == eos, 0)
        if task is not None and not official_prompts:
            tokens = tokens[:, len(getattr(model, model.prompt_ids[task])) - ours.prompt_length:]
        if not eos_input and not official_prompts:  # then exactly ours
            mine = vocabulary_map[ours.sequence_input(items, modality, task)[0]]
            assert torch.equal(tokens[:, :mine.shape[1]], mine) and not tokens[:, mine.shape[1]:].any()
        return tokens

    def labels(items, modality):
        tokens = official_labels(items, modality)
        return tokens if eos_label else tokens.masked_fill(tokens == eos, -100)

    return encoder_ids, labels


@contextlib.contextmanager
def swapped_layout(model, ours, vocabulary_map, **flags):
    """The swap's model with `layouts(...)` in place of its encoder_ids and labels."""
    encoder_ids, labels = layouts(model, ours, vocabulary_map, **flags)
    model.encoder_ids, model.labels = encoder_ids, labels
    try:
        yield model
    finally:
        del model.encoder_ids, model.labels  # the class's methods again


def seeded_loss(model, batch, seed=7):
    """calculate_loss with the same draws (fusionseqrec's modality, the translation items) on both sides."""
    torch.manual_seed(seed)
    return model.calculate_loss(batch)


def test_equal_weights_equal_loss_and_gradients(equal_weights):
    """Our loss (MQL4GRec.calculate_loss: the five tasks, each task's mean weighted by its samples) equals the swap's
    official loss (its calculate_loss: the five tasks stacked in one padded batch, HF T5's label cross-entropy) with
    the same random draws, on our encoder input (no </s>, our 4-token prompts as official pieces), with the
    word-piece logits masked out and the </s> labels ignored: eval and train mode (dropout 0). Measured on a
    training batch (78 targets, 258 samples): both 5.1798, equal to the last bit. Every gradient (token rows through
    the map) agrees within 3.9e-7 of the largest official entry of its tensor (asserted < 5e-6); the word pieces
    outside our vocabulary get exactly zero gradient."""
    from test_official_modules_letter import gradient_gap, shared_vocabulary

    model, ours, vocabulary_map, names, batch, _ = equal_weights
    try:
        with swapped_layout(model, ours, vocabulary_map), shared_vocabulary(model.t5, vocabulary_map):
            for training in (False, True):
                ours.train(training), model.train(training)
                with torch.no_grad():
                    torch.testing.assert_close(seeded_loss(ours, batch), seeded_loss(model, batch), **TOLERANCE)
            ours.zero_grad(), model.zero_grad()
            seeded_loss(ours, batch).backward()
            seeded_loss(model, batch).backward()
    finally:
        model.eval(), ours.eval()
    assert gradient_gap(ours.backbone, model.t5, names, vocabulary_map) < 5e-6
    word_pieces = torch.ones(model.t5.config.vocab_size, dtype=torch.bool)
    word_pieces[vocabulary_map] = False
    assert (model.t5.shared.weight.grad[word_pieces] == 0).all()
    ours.zero_grad(), model.zero_grad()


def test_equal_weights_documented_loss_differences(equal_weights):
    """The deviations, each alone against our loss (5.1798 on this batch of 258 samples, at the copied initial
    weights), and the official loss as the swap trains it (the same draws):
    - the word pieces in the official softmax: 10.901, +5.72 nats (at initialisation almost all of the mass is on
      the 32,100 pieces; adding terms to the normaliser can only raise the loss);
    - the </s> labels: 5.1250 = (4 x 5.1798 + the </s> term 4.9059) / 5, exactly the mean over 4 codes and the </s>;
    - the </s> ending the encoder input: 5.1791, -6.8e-4;
    - item2image's official prompt, re-tokenised by finetune.py into 5 pieces (a leading '▁' before the 4 pieces our
      prompt tokens stand for): 5.1783, -1.5e-3;
    - all of them (model.calculate_loss, the swap's training loss): 10.839."""
    from test_official_modules_letter import shared_vocabulary

    model, ours, vocabulary_map, _, batch, _ = equal_weights

    def eos_term_only(module, args, kwargs):  # the decoder still reads the codes; only the </s> labels count
        labels = kwargs["labels"]
        return args, {**kwargs, "decoder_input_ids": module._shift_right(labels),
                      "labels": torch.cat([torch.full_like(labels[:, :-1], -100), labels[:, -1:]], dim=1)}

    with torch.no_grad():
        loss = seeded_loss(ours, batch)
        with swapped_layout(model, ours, vocabulary_map):
            word_pieces = seeded_loss(model, batch)
        with shared_vocabulary(model.t5, vocabulary_map):
            with swapped_layout(model, ours, vocabulary_map, eos_label=True):
                with_eos_label = seeded_loss(model, batch)
                handle = model.t5.register_forward_pre_hook(eos_term_only, with_kwargs=True)
                try:
                    eos_term = seeded_loss(model, batch)
                finally:
                    handle.remove()
            with swapped_layout(model, ours, vocabulary_map, eos_input=True):
                eos_input = seeded_loss(model, batch)
            with swapped_layout(model, ours, vocabulary_map, official_prompts=True):
                official_prompts = seeded_loss(model, batch)
        official = seeded_loss(model, batch)
    levels = ours.vocab["text"].num_levels
    assert word_pieces > loss + 1.0
    torch.testing.assert_close(with_eos_label, (levels * loss + eos_term) / (levels + 1), **TOLERANCE)
    for variant in (with_eos_label, eos_input, official_prompts):
        assert abs(variant - loss) > 1e-4
    assert official > loss + 1.0


def test_equal_weights_equal_beams_scores_and_fusion(equal_weights):
    """Per modality, the official decoding (test_ddp_save.py's generate with the official trie: the swap's
    official_generate) on our encoder input with the word-piece logits masked out keeps the same 10 codes per user
    as our beam search, each official sequence score being (our score + log p(</s> | codes)) / 5: HF's beam adds the
    </s> step the official trie forces after the 4th code and divides by the generated length (our score is the sum
    over the 4 codes; our fusion uses its mean, / 4). The official fusion of those beams (ensemble.py, the swap's
    generate_topk) is our fusion rule (fuse_two_lists) on our beams with the official scores, once a code shared by
    two items names the item the official map names (index2item_id[code][0]: the first of the code file; ours: the
    lowest RecBole id). Measured on 16 users: scores within 1.5e-6 (asserted 1e-5). Each difference alone changes
    the fused lists: with our scores (the documented </s> term left out) all 16 of the 16 fused top-10 lists differ
    from the official ones; with our naming of the fixture's one shared text code (14 of the 160 text beams hold it)
    14 of 16 differ. With both, ours.generate_topk, all 16."""
    from test_official_modules_letter import parse_codes, shared_vocabulary

    from recbole_genrec.inference import generate_items
    from recbole_genrec.model.mql4grec import MODALITIES, fuse_two_lists

    model, ours, vocabulary_map, _, _, interaction = equal_weights
    items, _ = ours.history(interaction)
    users, beam = len(items), ours.beam_size
    eos = model.tokenizer.eos_token_id
    lists, renamed = {}, 0
    with torch.no_grad(), swapped_layout(model, ours, vocabulary_map), \
            shared_vocabulary(model.t5, vocabulary_map):
        for modality in MODALITIES:
            vocab = ours.vocab[modality]
            output = generate_items(ours.backbone, *ours.sequence_input(items, modality), vocab=vocab,
                                    beam_size=beam, topk=10, constraints=ours.catalogues[modality])
            strings, scores = model.official_generate(items, modality)
            codes = torch.tensor(parse_codes(strings)).view(users, beam, vocab.num_levels)
            scores = torch.tensor(scores).view(users, beam)
            # log p(</s> | history, codes) of every official beam, teacher-forced through the official network
            labels = vocabulary_map[vocab.to_tokens(codes.flatten(0, 1))]
            labels = torch.cat([labels, labels.new_full((len(labels), 1), eos)], dim=1)
            input_ids = model.encoder_ids(items, modality).repeat_interleave(beam, 0)
            logits = model.t5(input_ids=input_ids, attention_mask=(input_ids != 0).long(), labels=labels).logits
            eos_log_prob = logits[:, -1].log_softmax(-1)[:, eos].view(users, beam)
            official_score = torch.empty(users, beam)  # the official score of each of our beams, in our order
            for user in range(users):
                ours_codes = [tuple(row) for row in output.codes[user].tolist()]
                official_codes = [tuple(row) for row in codes[user].tolist()]
                assert sorted(ours_codes) == sorted(official_codes)
                order = torch.tensor([ours_codes.index(code) for code in official_codes])
                expected = (output.scores[user, order] + eos_log_prob[user]) / (vocab.num_levels + 1)
                torch.testing.assert_close(scores[user], expected, rtol=0, atol=1e-5)
                official_score[user, order] = scores[user]
            # our beams named by the official code -> item map
            tokens = vocabulary_map[vocab.to_tokens(output.codes)]
            official_items = torch.tensor([[model.index2id[modality]["".join(model.id_to_token[t] for t in row)][0]
                                            for row in user_tokens] for user_tokens in tokens.tolist()])
            differ = official_items != output.items
            shared = (ours.item_codes[official_items] == ours.item_codes[output.items])
            columns = slice(0, vocab.num_levels) if modality == "text" else slice(vocab.num_levels, None)
            assert shared[..., columns].all() and not shared[differ].all(-1).any()  # same code, another item
            renamed += int(differ.sum())
            lists[modality] = {"ours": (output.items, output.scores / vocab.num_levels),  # our fusion's inputs
                               "official": (official_items, official_score),  # named and scored officially
                               "official scores": (output.items, official_score),
                               "official naming": (official_items, output.scores / vocab.num_levels)}
        fused, _ = model.generate_topk(interaction, 10)
    assert renamed > 0  # the fixture's one shared text code is in some beams

    def fuse(variant):
        return fuse_two_lists(*lists["text"][variant], *lists["image"][variant], k=10)[0]

    assert torch.equal(fused, fuse("official"))
    assert torch.equal(ours.generate_topk(interaction, 10)[0], fuse("ours"))
    for variant in ("ours", "official scores", "official naming"):  # each difference alone changes some lists
        assert (fuse(variant) != fused).any()
