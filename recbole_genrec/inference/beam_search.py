"""The one batched beam search over semantic IDs, shared by every generative backbone.

Everything is a tensor operation over (users x beams x level vocabulary): one `step_fn` call per level, a top-k over
the flattened beam x code candidates, a gather of the parents, one `index_select` of the decoder state. Prefix
constraints come from `PrefixConstraints` tables on the device; no per-beam Python and no host syncs in the loop.

Scores are sums of per-level log-probabilities normalised over the FULL vocabulary (the training cross-entropy's
normalisation) and restricted to the level's token range, so a beam can only emit a well-formed code tuple; with
`level_softmax` they are normalised over the level's own range (a model trained with one softmax per level, as
per-level output heads are).
"""
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor

from recbole_genrec.inference.prefix import PrefixConstraints, SemanticIdVocab


@dataclass
class BeamSearchOutput:
    """Per user, beams sorted by score (best first).

    items: long [B, beam], -1 where the beam is not an item (invalid code or fewer candidates than beams).
    codes: long [B, beam, L], the generated codes (-1 for beams that never existed, e.g. a catalogue smaller than
        the beam; an invalid beam keeps the codes it generated).
    scores: float32 [B, beam], sum of the per-level log-probabilities; -inf where items is -1.
    invalid_rate: among the top-`topk` sequences the beam generated (ranked by score before filtering, beams that
        never existed not counted), the fraction whose full code belongs to no item. Always 0 when constrained.
        This is the TIGER paper's "invalid IDs in the top-K" measure.
    """
    items: Tensor
    codes: Tensor
    scores: Tensor
    invalid_rate: float


def check_beam_size(beam_size: int, topk: int):
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}.")
    if beam_size < topk:
        raise ValueError(
            f"beam_size ({beam_size}) must be >= topk ({topk}): beam search returns at most beam_size items per "
            f"user. Raise the config key `beam_size` or lower the largest `topk`.")


@torch.no_grad()
def beam_search(
    step_fn: Callable[[Tensor, Any], Tuple[Tensor, Any]],
    initial_state: Any,
    batch_size: int,
    num_levels: int,
    vocab: SemanticIdVocab,
    beam_size: int,
    constraints: Optional[PrefixConstraints] = None,
    catalogue: Optional[PrefixConstraints] = None,
    topk: Optional[int] = None,
    state_rows_per_user: Optional[int] = None,
    start_token: Optional[int] = None,
    device: Optional[torch.device] = None,
    level_softmax: bool = False,
) -> BeamSearchOutput:
    """Decode `num_levels` semantic-ID tokens per user with a beam of `beam_size`.

    Args:
        step_fn: `(last_tokens [R], state) -> (logits or log-probs [R, vocab_total], state)`, where R is the
            number of rows of the state (user-major: rows u*r .. u*r + r - 1 belong to user u). The state must
            offer `index_select(index [R']) -> state` (rows `index`, in that order).
        initial_state: decoder state before the first token, with `state_rows_per_user` rows per user.
        batch_size: number of users B.
        num_levels: number of code levels L to decode (= vocab.num_levels).
        vocab: the token layout (level l's codes are a contiguous token range).
        constraints: prefix tables of the valid items; None = unconstrained (the TIGER paper's mode: generate
            freely, map codes to items afterwards, invalid codes get item -1 and score -inf at the end).
        catalogue: code -> item map used to name the generated codes; defaults to `constraints` (so it is required
            in unconstrained mode).
        topk: how many top sequences `invalid_rate` looks at (default beam_size); must be <= beam_size.
        state_rows_per_user: 1 (the first step then runs once per user and the state is expanded to the beam
            after it) or beam_size (each user's state already repeated beam_size times); default beam_size.
        start_token: first decoder input (default vocab.pad_id, T5's decoder start token).
        device: where to create the token tensors (default `initial_state.device`).
        level_softmax: normalise each level's log-probabilities over that level's tokens only (default: over the
            whole vocabulary).
    """
    catalogue = constraints if catalogue is None else catalogue
    if catalogue is None:
        raise ValueError("beam_search needs a catalogue (PrefixConstraints) to map codes to items in "
                         "unconstrained mode: pass catalogue=.")
    if num_levels != vocab.num_levels or num_levels != catalogue.num_levels:
        raise ValueError(f"beam_search: num_levels={num_levels} but the vocabulary has {vocab.num_levels} levels "
                         f"and the catalogue {catalogue.num_levels}.")
    topk = beam_size if topk is None else topk
    check_beam_size(beam_size, topk)
    rows = beam_size if state_rows_per_user is None else state_rows_per_user
    if rows not in (1, beam_size):
        raise ValueError(f"state_rows_per_user must be 1 or beam_size ({beam_size}), got {rows}.")
    device = initial_state.device if device is None else device
    start_token = vocab.pad_id if start_token is None else start_token

    users = torch.arange(batch_size, device=device)
    # One live beam per user at the start (the other rows, if any, are -inf) so the beams stay distinct.
    scores = torch.full((batch_size, rows), float("-inf"), device=device)
    scores[:, 0] = 0.0
    prefix_keys = torch.zeros(batch_size, rows, dtype=torch.long, device=device)
    codes = torch.zeros(batch_size, rows, 0, dtype=torch.long, device=device)
    tokens = torch.full((batch_size * rows,), start_token, dtype=torch.long, device=device)
    state = initial_state

    for level in range(num_levels):
        logits, state = step_fn(tokens, state)
        logits = logits.float()  # scores in float32 whatever the autocast dtype
        start, level_size = vocab.level_start(level), vocab.vocab_sizes[level]
        level_logits = logits[:, start:start + level_size]
        log_probs = level_logits - (level_logits if level_softmax else logits).logsumexp(dim=-1, keepdim=True)
        log_probs = log_probs.view(batch_size, rows, level_size)
        if constraints is not None:
            log_probs = log_probs.masked_fill(~constraints.allowed_next(level, prefix_keys), float("-inf"))

        candidates = (scores.unsqueeze(-1) + log_probs).view(batch_size, rows * level_size)
        n_kept = min(beam_size, rows * level_size)
        scores, flat = candidates.topk(n_kept, dim=1)
        if n_kept < beam_size:  # first level smaller than the beam: pad with dead beams
            scores = torch.cat([scores, scores.new_full((batch_size, beam_size - n_kept), float("-inf"))], dim=1)
            flat = torch.cat([flat, flat.new_zeros(batch_size, beam_size - n_kept)], dim=1)
        parent, code = flat // level_size, flat % level_size

        codes = torch.cat([codes.gather(1, parent.unsqueeze(-1).expand(-1, -1, level)), code.unsqueeze(-1)], dim=-1)
        if constraints is not None:
            prefix_keys = constraints.extend_key(prefix_keys.gather(1, parent), level, code)
        if level + 1 < num_levels:
            state = state.index_select((users.unsqueeze(1) * rows + parent).view(-1))
            tokens = (code + start).view(-1)
        rows = beam_size

    return _name_items(codes, scores, catalogue, topk)


def _name_items(codes: Tensor, scores: Tensor, catalogue: PrefixConstraints, topk: int) -> BeamSearchOutput:
    """Map codes to items; invalid or missing beams get item -1 and score -inf and move to the end."""
    generated = torch.isfinite(scores)
    items = torch.where(generated, catalogue.lookup_items(codes), torch.full_like(scores, -1, dtype=torch.long))
    invalid = generated & (items < 0)
    counts = torch.stack([invalid[:, :topk].sum(), generated[:, :topk].sum()]).tolist()  # the one host sync
    invalid_rate = counts[0] / counts[1] if counts[1] else 0.0

    scores = scores.masked_fill(items < 0, float("-inf"))
    codes = codes.masked_fill(~generated.unsqueeze(-1), -1)
    # Stable: valid beams keep their (descending) order, invalid ones follow in theirs.
    order = scores.argsort(dim=1, descending=True, stable=True)
    return BeamSearchOutput(
        items=items.gather(1, order),
        codes=codes.gather(1, order.unsqueeze(-1).expand_as(codes)),
        scores=scores.gather(1, order),
        invalid_rate=invalid_rate,
    )


@torch.no_grad()
def generate_items(model, input_ids: Tensor, attention_mask: Tensor, vocab: SemanticIdVocab, beam_size: int,
                   topk: int, constraints: Optional[PrefixConstraints] = None,
                   catalogue: Optional[PrefixConstraints] = None,
                   inputs_embeds_extra: Optional[Tensor] = None, memory: Optional[Tensor] = None,
                   level_softmax: bool = False) -> BeamSearchOutput:
    """Top items of an `EncoderDecoder` for a batch of encoder inputs: encode once, then beam search with the
    key/value cache (the first step runs once per user; the state is expanded to the beam after it).

    Raises ValueError when beam_size < topk. `constraints=None` decodes unconstrained; `catalogue` (default
    `constraints`) maps codes to items and is then required. Returns `beam_size` beams per user; callers keep the
    first `topk`. `memory`: the encoder output when the caller already has it (LIGER scores it densely too).
    `level_softmax`: see `beam_search`.
    """
    check_beam_size(beam_size, topk)
    if memory is None:
        memory = model.encode(input_ids, attention_mask, inputs_embeds_extra)
    state = model.start_decoding(memory, attention_mask)
    return beam_search(model.decode_step, state, input_ids.shape[0], vocab.num_levels, vocab, beam_size,
                       constraints=constraints, catalogue=catalogue, topk=topk, state_rows_per_user=1,
                       device=input_ids.device, level_softmax=level_softmax)
