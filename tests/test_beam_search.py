"""The shared batched beam search and its prefix tables, checked against exhaustive scoring."""
import itertools

import pytest
import torch

from recbole_genrec.inference import BeamSearchOutput, PrefixConstraints, SemanticIdVocab, beam_search, generate_items
from recbole_genrec.model.layers import EncoderDecoder

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
VOCAB_SIZES = [4, 4, 3]  # 48 possible codes


def catalogue_codes(n_items, seed=0):
    """codes [n_items + 1, 3], unique, row 0 = padding (zeros, never an item)."""
    space = torch.tensor(list(itertools.product(*(range(v) for v in VOCAB_SIZES))))
    chosen = space[torch.randperm(len(space), generator=torch.Generator().manual_seed(seed))[:n_items]]
    return torch.cat([torch.zeros(1, 3, dtype=torch.long), chosen])


@pytest.fixture(scope="module")
def vocab():
    return SemanticIdVocab(VOCAB_SIZES)


def make_model(vocab, device="cpu"):
    torch.manual_seed(0)
    return EncoderDecoder(vocab.size, d_model=32, num_heads=2, d_kv=16, d_ff=64, num_encoder_layers=2,
                          num_decoder_layers=2).to(device).eval()


def make_histories(vocab, codes, n_users=5, max_items=4, seed=1):
    """Encoder inputs: flattened SID tokens of 1..max_items history items, right-padded."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(n_users, max_items * 3, dtype=torch.long)
    for user in range(n_users):
        length = 1 + user % max_items
        items = torch.randint(1, len(codes), (length,), generator=generator)
        tokens[user, :length * 3] = vocab.to_tokens(codes[items]).flatten()
    return tokens, tokens != vocab.pad_id


@torch.no_grad()
def exhaustive_scores(model, vocab, input_ids, mask, codes, level_softmax=False):
    """[B, n] sequence log-probability of every row of `codes` [n, L] by teacher forcing; with `level_softmax` each
    level's softmax runs over that level's tokens only (what per-level output heads compute)."""
    targets = vocab.to_tokens(codes)
    decoder_input = torch.cat([torch.full_like(targets[:, :1], vocab.pad_id), targets[:, :-1]], 1)
    memory = model.encode(input_ids, mask)
    scores = []
    for user in range(input_ids.shape[0]):
        n = len(codes)
        logits = model.lm_logits(model.decode(decoder_input, memory[user].expand(n, -1, -1),
                                              mask[user].expand(n, -1)))
        logits = logits.float()
        if level_softmax:
            outside = torch.ones_like(logits, dtype=torch.bool)
            for level in range(vocab.num_levels):
                outside[:, level, list(vocab.level_range(level))] = False
            logits = logits.masked_fill(outside, float("-inf"))
        log_probs = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        scores.append(log_probs.sum(-1))
    return torch.stack(scores)


@pytest.mark.parametrize("level_softmax", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_full_beam_equals_exhaustive_ranking(vocab, device, level_softmax):
    codes = catalogue_codes(40)
    model = make_model(vocab, device)
    input_ids, mask = (t.to(device) for t in make_histories(vocab, codes))
    constraints = PrefixConstraints(codes, VOCAB_SIZES).to(device)
    out = generate_items(model, input_ids, mask, vocab=vocab, beam_size=40, topk=10, constraints=constraints,
                         level_softmax=level_softmax)
    expected = exhaustive_scores(model, vocab, input_ids, mask, codes[1:].to(device), level_softmax)
    expected_scores, order = expected.sort(dim=1, descending=True)
    assert torch.equal(out.items, order + 1)
    torch.testing.assert_close(out.scores, expected_scores, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.codes, codes.to(device)[out.items])
    assert out.invalid_rate == 0.0


def test_constrained_returns_real_unique_items(vocab):
    codes = catalogue_codes(40)
    model = make_model(vocab)
    input_ids, mask = make_histories(vocab, codes, n_users=8)
    out = generate_items(model, input_ids, mask, vocab=vocab, beam_size=10, topk=10,
                         constraints=PrefixConstraints(codes, VOCAB_SIZES))
    assert isinstance(out, BeamSearchOutput) and out.items.shape == (8, 10) and out.codes.shape == (8, 10, 3)
    assert ((out.items >= 1) & (out.items <= 40)).all()
    assert all(len(set(row.tolist())) == 10 for row in out.items)
    assert torch.isfinite(out.scores).all() and (out.scores[:, :-1] >= out.scores[:, 1:]).all()
    assert torch.equal(out.codes, codes[out.items])


def test_catalogue_smaller_than_beam(vocab):
    codes = catalogue_codes(3)
    model = make_model(vocab)
    input_ids, mask = make_histories(vocab, catalogue_codes(40))
    out = generate_items(model, input_ids, mask, vocab=vocab, beam_size=10, topk=5,
                         constraints=PrefixConstraints(codes, VOCAB_SIZES))
    assert torch.equal(out.items[:, :3].sort(1).values, torch.tensor([[1, 2, 3]]).expand(5, 3))
    assert (out.items[:, 3:] == -1).all() and torch.isinf(out.scores[:, 3:]).all()
    assert (out.codes[:, 3:] == -1).all() and torch.isfinite(out.scores[:, :3]).all()


def test_unconstrained_reports_and_filters_invalid(vocab):
    codes = catalogue_codes(12)  # a quarter of the code space
    model = make_model(vocab)
    input_ids, mask = make_histories(vocab, catalogue_codes(40), n_users=6)
    catalogue = PrefixConstraints(codes, VOCAB_SIZES)
    out = generate_items(model, input_ids, mask, vocab=vocab, beam_size=10, topk=10, catalogue=catalogue)
    assert out.invalid_rate > 0
    valid_codes = {tuple(c) for c in codes[1:].tolist()}
    n_invalid = 0
    for items, row_codes, scores in zip(out.items, out.codes, out.scores):
        for item, code, score in zip(items.tolist(), row_codes.tolist(), scores.tolist()):
            if item == -1:
                n_invalid += 1
                assert tuple(code) not in valid_codes and score == float("-inf")
            else:
                assert codes[item].tolist() == code and score > float("-inf")
    assert out.invalid_rate == pytest.approx(n_invalid / out.items.numel())
    # Invalid beams are moved after the valid ones.
    assert all((row == -1).tolist() == sorted((row == -1).tolist()) for row in out.items)


def test_unconstrained_full_beam_ranks_valid_items_exactly(vocab):
    """A beam as large as the code space explores every code: the valid ones are the items ranked exhaustively."""
    codes = catalogue_codes(12)
    model = make_model(vocab)
    input_ids, mask = make_histories(vocab, catalogue_codes(40))
    out = generate_items(model, input_ids, mask, vocab=vocab, beam_size=48, topk=48,
                         catalogue=PrefixConstraints(codes, VOCAB_SIZES))
    assert out.invalid_rate == pytest.approx(36 / 48)
    expected_scores, order = exhaustive_scores(model, vocab, input_ids, mask, codes[1:]).sort(1, descending=True)
    assert torch.equal(out.items[:, :12], order + 1) and (out.items[:, 12:] == -1).all()
    torch.testing.assert_close(out.scores[:, :12], expected_scores, atol=1e-5, rtol=1e-5)


def test_beam_smaller_than_topk_is_an_error(vocab):
    codes = catalogue_codes(40)
    model = make_model(vocab)
    input_ids, mask = make_histories(vocab, codes)
    with pytest.raises(ValueError, match="beam_size"):
        generate_items(model, input_ids, mask, vocab=vocab, beam_size=5, topk=10,
                       constraints=PrefixConstraints(codes, VOCAB_SIZES))


def test_unconstrained_needs_a_catalogue(vocab):
    codes = catalogue_codes(40)
    model = make_model(vocab)
    input_ids, mask = make_histories(vocab, codes)
    with pytest.raises(ValueError, match="catalogue"):
        generate_items(model, input_ids, mask, vocab=vocab, beam_size=5, topk=5)


@pytest.mark.parametrize("constrained", [True, False])
def test_batch_equals_one_user_at_a_time(vocab, constrained):
    codes = catalogue_codes(40)
    model = make_model(vocab)
    input_ids, mask = make_histories(vocab, codes, n_users=6)
    catalogue = PrefixConstraints(codes, VOCAB_SIZES)
    kwargs = dict(vocab=vocab, beam_size=8, topk=8, constraints=catalogue if constrained else None,
                  catalogue=catalogue)
    batched = generate_items(model, input_ids, mask, **kwargs)
    for user in range(6):
        length = int(mask[user].sum())  # the single user without any padding
        alone = generate_items(model, input_ids[user:user + 1, :length], mask[user:user + 1, :length], **kwargs)
        assert torch.equal(alone.items[0], batched.items[user])
        assert torch.equal(alone.codes[0], batched.codes[user])
        torch.testing.assert_close(alone.scores[0], batched.scores[user], atol=1e-5, rtol=1e-5)


def test_repeated_state_convention_gives_the_same_beams(vocab):
    """beam_search accepts the state with one row per user or already repeated beam_size times."""
    codes = catalogue_codes(40)
    model = make_model(vocab)
    input_ids, mask = make_histories(vocab, codes)
    constraints = PrefixConstraints(codes, VOCAB_SIZES)
    with torch.no_grad():
        state = model.start_decoding(model.encode(input_ids, mask), mask)
    once = beam_search(model.decode_step, state, 5, 3, vocab, 10, constraints, state_rows_per_user=1)
    repeated = beam_search(model.decode_step, state.index_select(torch.arange(5).repeat_interleave(10)), 5, 3,
                           vocab, 10, constraints)
    assert torch.equal(once.items, repeated.items)
    torch.testing.assert_close(once.scores, repeated.scores)


def test_bf16_autocast_keeps_float32_scores(vocab):
    codes = catalogue_codes(40)
    model = make_model(vocab)
    input_ids, mask = make_histories(vocab, codes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = generate_items(model, input_ids, mask, vocab=vocab, beam_size=10, topk=10,
                             constraints=PrefixConstraints(codes, VOCAB_SIZES))
    assert out.scores.dtype == torch.float32 and torch.isfinite(out.scores).all()
    assert ((out.items >= 1) & (out.items <= 40)).all()


def test_prefix_constraints_on_a_hand_made_table():
    sizes = [3, 2, 2]
    codes = torch.tensor([
        [0, 0, 0],  # padding row, skipped
        [0, 1, 0],  # item 1
        [0, 1, 1],  # item 2
        [2, 0, 1],  # item 3
        [0, 0, 0],  # item 4
        [0, 1, 1],  # item 5: same code as item 2 -> shadowed by the lower id
    ])
    table = PrefixConstraints(codes, sizes)
    key = table.prefix_key
    assert table.num_items == 4 and table.num_shadowed_items == 1
    assert table.allowed_next(0, torch.tensor([0])).tolist() == [[True, False, True]]
    level1 = table.allowed_next(1, key(torch.tensor([[0], [2], [1]])))
    assert level1.tolist() == [[True, True], [True, False], [False, False]]
    level2 = table.allowed_next(2, key(torch.tensor([[0, 1], [2, 0], [0, 0], [1, 1]])))
    assert level2.tolist() == [[True, True], [False, True], [True, False], [False, False]]
    # Batched keys of any shape.
    assert table.allowed_next(1, torch.zeros(2, 3, dtype=torch.long)).shape == (2, 3, 2)
    queries = torch.tensor([[0, 1, 0], [0, 1, 1], [2, 0, 1], [0, 0, 0], [1, 1, 1], [2, 1, 1], [0, 2, 0]])
    assert table.lookup_items(queries).tolist() == [1, 2, 3, 4, -1, -1, -1]
    assert table.extend_key(key(torch.tensor([[2, 0]])), 2, torch.tensor([1])).tolist() == key(
        torch.tensor([[2, 0, 1]])).tolist()

    # A sub-catalogue given by item ids.
    subset = PrefixConstraints(codes[[3, 5]], sizes, item_ids=torch.tensor([3, 5]))
    assert subset.lookup_items(queries[:3]).tolist() == [-1, 5, 3]
    assert subset.allowed_next(0, torch.tensor([0])).tolist() == [[True, False, True]]
    # Tables are buffers (moved by .to) but not checkpoint entries.
    assert len(list(table.buffers())) == 2 * 3 + 2 and table.state_dict() == {}
    with pytest.raises(ValueError):
        PrefixConstraints(torch.tensor([[0, 0, 0], [0, 2, 0]]), sizes)


def test_prefix_constraints_without_next_code_tables_answer_prefix_membership():
    """`next_code_tables=False` keeps only the sorted keys: `has_prefix` says which prefixes exist (each level's
    keys, the full codes at the last level), as the dense tables do, and the item look-up is unchanged."""
    sizes = [3, 2, 2]
    codes = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 1, 1], [2, 0, 1], [0, 0, 0], [0, 1, 1]])
    dense, sparse = PrefixConstraints(codes, sizes), PrefixConstraints(codes, sizes, next_code_tables=False)
    assert len(list(sparse.buffers())) == 3 + 2 and sparse.state_dict() == {}
    every = torch.tensor(list(itertools.product(*(range(v) for v in sizes))))  # all 12 codes
    for level in range(3):  # the length-(level + 1) prefixes: allowed after their length-level prefix
        prefixes = every[:, :level + 1]
        expected = dense.allowed_next(level, dense.prefix_key(prefixes[:, :level])).gather(
            1, prefixes[:, level:]).squeeze(1)
        found = sparse.has_prefix(level + 1, sparse.prefix_key(prefixes))
        assert torch.equal(found, expected) and torch.equal(dense.has_prefix(level + 1, dense.prefix_key(prefixes)),
                                                            expected)
    assert sparse.has_prefix(2, sparse.prefix_key(torch.tensor([[[0, 1], [2, 1]]]))).tolist() == [[True, False]]
    assert torch.equal(sparse.lookup_items(every), dense.lookup_items(every))
    with pytest.raises(ValueError, match="has_prefix"):
        sparse.allowed_next(1, torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        sparse.has_prefix(0, torch.zeros(1, dtype=torch.long))
    empty = PrefixConstraints(codes[:1], sizes, next_code_tables=False)  # the padding row only
    assert empty.has_prefix(3, torch.zeros(2, dtype=torch.long)).tolist() == [False, False]


def test_vocab_layout():
    vocab = SemanticIdVocab([4, 4, 3])
    assert vocab.size == 13 and vocab.level_offset == [0, 4, 8] and vocab.pad_id == 0 and vocab.eos_id == 1
    codes = torch.tensor([[3, 0, 2], [0, 3, 1]])
    tokens = vocab.to_tokens(codes)
    assert tokens.tolist() == [[5, 6, 12], [2, 9, 11]]
    assert torch.equal(vocab.to_codes(tokens), codes)
    assert vocab.to_codes(torch.tensor([[1, 5, 12]])).tolist() == [[-1, -1, 2]]
    assert list(vocab.level_range(2)) == [10, 11, 12]
    image = SemanticIdVocab([4, 4], n_special=vocab.size)  # a second modality after the first one's tokens
    assert image.level_start(0) == 13 and image.size == 21
