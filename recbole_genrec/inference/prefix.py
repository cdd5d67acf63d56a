"""Semantic-ID token layout and prefix constraints as precomputed tensors (no Python tries, no per-beam loops).

Token layout shared by the sequence models: token 0 = PAD (also the decoder start token, as in T5), token 1 = EOS
(reserved), then one contiguous range per level: `token = n_special + level_offset[l] + code`.

`PrefixConstraints` stores, for every level l, the sorted mixed-radix keys of all length-l prefixes of the valid
items' codes and a bool table of the codes allowed after each prefix; a batch of beams finds its rows with one
`torch.searchsorted`. It also maps full codes back to item ids, so it doubles as the catalogue of the beam search.
Without the bool tables (`next_code_tables=False`, for level vocabularies too large for a [prefixes, codes] table)
it answers only whether given prefixes exist (`has_prefix`), from the sorted keys: memory proportional to the items.
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn


class SemanticIdVocab:
    """Token ids of semantic-ID codes: level l's codes occupy `[level_start(l), level_start(l) + vocab_sizes[l])`.

    `n_special` is the number of tokens before the first level's range (2: PAD and EOS). A second code modality in
    the same vocabulary (MQL4GRec's image codes after the text codes) is `SemanticIdVocab(image_sizes,
    n_special=text_vocab.size)`.
    """

    pad_id = 0
    eos_id = 1

    def __init__(self, vocab_sizes: Sequence[int], n_special: int = 2):
        self.vocab_sizes: List[int] = [int(v) for v in vocab_sizes]
        self.n_special = int(n_special)
        self.level_offset: List[int] = [sum(self.vocab_sizes[:level]) for level in range(len(self.vocab_sizes))]
        self.size = self.n_special + sum(self.vocab_sizes)

    @property
    def num_levels(self) -> int:
        return len(self.vocab_sizes)

    def level_start(self, level: int) -> int:
        """First token id of level `level`."""
        return self.n_special + self.level_offset[level]

    def level_range(self, level: int) -> range:
        return range(self.level_start(level), self.level_start(level) + self.vocab_sizes[level])

    def to_tokens(self, codes: Tensor) -> Tensor:
        """codes [..., l] (the first l <= L levels) -> tokens [..., l]."""
        starts = torch.tensor([self.level_start(level) for level in range(codes.shape[-1])], device=codes.device)
        return codes.long() + starts

    def item_tokens(self, item_codes: Tensor) -> Tensor:
        """The token table of a catalogue: item_codes [n_items + 1, L] (row 0 = padding item) -> tokens, with row 0
        all PAD so padded history positions vanish."""
        tokens = self.to_tokens(item_codes)
        tokens[0] = self.pad_id
        return tokens

    def to_codes(self, tokens: Tensor) -> Tensor:
        """tokens [..., l] -> codes [..., l]; a token outside its level's range gives -1."""
        levels = tokens.shape[-1]
        starts = torch.tensor([self.level_start(level) for level in range(levels)], device=tokens.device)
        sizes = torch.tensor(self.vocab_sizes[:levels], device=tokens.device)
        codes = tokens.long() - starts
        return torch.where((codes >= 0) & (codes < sizes), codes, torch.full_like(codes, -1))

    def __repr__(self):
        return f"SemanticIdVocab(vocab_sizes={self.vocab_sizes}, n_special={self.n_special}, size={self.size})"


class PrefixConstraints(nn.Module):
    """Valid next codes after every prefix of the catalogue's semantic IDs, and the full-code -> item map.

    Args:
        codes: LongTensor. Either the full table `[n_items + 1, L]` with row 0 the padding item (skipped; item id =
            row index), or, with `item_ids`, the codes `[M, L]` of the items `item_ids [M]` only (e.g. a catalogue
            restricted to some items).
        vocab_sizes: per-level code counts; level l codes must lie in `[0, vocab_sizes[l])`.
        item_ids: optional LongTensor [M] (see `codes`).
        next_code_tables: build the bool tables [prefixes, vocab_sizes[l]] of `allowed_next` (the shared beam
            search's constraints). False keeps only the sorted keys (`has_prefix`, `lookup_*`): for a decoder that
            scores a few candidate codes per beam out of a level vocabulary too large for such tables (EAGER's
            tree nodes).

    Duplicate full codes (a tokenizer run without a collision policy) map to the LOWEST item id sharing the code;
    the other items cannot be generated. `num_shadowed_items` counts them.

    All tables are non-persistent buffers: `.to(device)` (or moving the model that owns this module) moves them,
    and they stay out of checkpoints since they are derived from the semantic IDs.
    """

    def __init__(self, codes: Tensor, vocab_sizes: Sequence[int], item_ids: Optional[Tensor] = None,
                 next_code_tables: bool = True):
        super().__init__()
        codes = torch.as_tensor(codes).long().cpu()
        if item_ids is None:
            codes, item_ids = codes[1:], torch.arange(1, codes.shape[0])
        else:
            item_ids = torch.as_tensor(item_ids).long().cpu()
        if codes.dim() != 2 or codes.shape[0] != item_ids.shape[0] or codes.shape[1] != len(vocab_sizes):
            raise ValueError(f"PrefixConstraints: codes {tuple(codes.shape)} do not match item_ids "
                             f"{tuple(item_ids.shape)} and {len(vocab_sizes)} levels.")
        self.vocab_sizes = [int(v) for v in vocab_sizes]
        self.next_code_tables = bool(next_code_tables)
        sizes = torch.tensor(self.vocab_sizes)
        if codes.numel() and ((codes < 0).any() or (codes >= sizes).any()):
            raise ValueError(f"PrefixConstraints: codes outside [0, vocab_sizes={self.vocab_sizes}).")
        code_space = 1
        for size in self.vocab_sizes:
            code_space *= size
        if code_space >= 2 ** 63:
            raise ValueError(f"PrefixConstraints: the code space {self.vocab_sizes} does not fit int64 keys.")

        # Level by level: unique sorted keys of the length-l prefixes, and which level-l codes follow each of them.
        keys = torch.zeros(codes.shape[0], dtype=torch.long)
        for level, size in enumerate(self.vocab_sizes):
            prefix_keys, row = torch.unique(keys, sorted=True, return_inverse=True)
            if level == 0:  # the empty prefix exists even for an empty catalogue
                prefix_keys, row = torch.zeros(1, dtype=torch.long), torch.zeros_like(keys)
            self.register_buffer(f"prefix_keys_{level}", prefix_keys, persistent=False)
            if next_code_tables:
                allowed = torch.zeros(prefix_keys.shape[0], size, dtype=torch.bool)
                allowed[row, codes[:, level]] = True
                self.register_buffer(f"allowed_{level}", allowed, persistent=False)
            keys = keys * size + codes[:, level]

        full_keys, row = torch.unique(keys, sorted=True, return_inverse=True)
        lowest_item = torch.full((full_keys.shape[0],), torch.iinfo(torch.long).max, dtype=torch.long)
        lowest_item.scatter_reduce_(0, row, item_ids, reduce="amin")
        self.register_buffer("full_keys", full_keys, persistent=False)
        self.register_buffer("full_key_items", lowest_item, persistent=False)
        self.num_items = int(full_keys.shape[0])  # items reachable by decoding (distinct codes)
        self.num_shadowed_items = int(codes.shape[0]) - self.num_items

    @property
    def num_levels(self) -> int:
        return len(self.vocab_sizes)

    def extend_key(self, prefix_keys: Tensor, level: int, codes: Tensor) -> Tensor:
        """Keys of the length-(level + 1) prefixes made of length-`level` prefixes `prefix_keys` and `codes`."""
        return prefix_keys * self.vocab_sizes[level] + codes

    def prefix_key(self, codes: Tensor) -> Tensor:
        """codes [..., l] (a prefix of l levels) -> mixed-radix int64 key [...]; l = 0 gives 0."""
        keys = torch.zeros(codes.shape[:-1], dtype=torch.long, device=codes.device)
        for level in range(codes.shape[-1]):
            keys = self.extend_key(keys, level, codes[..., level].long())
        return keys

    @staticmethod
    def _find(sorted_keys: Tensor, keys: Tensor):
        """Row of each key in non-empty `sorted_keys` (clamped, so always a valid index) and whether it is there."""
        row = torch.searchsorted(sorted_keys, keys.contiguous()).clamp(max=sorted_keys.shape[0] - 1)
        return row, sorted_keys[row] == keys

    def allowed_next(self, level: int, prefix_keys: Tensor) -> Tensor:
        """prefix_keys [...] of length-`level` prefixes -> bool [..., vocab_sizes[level]] of valid next codes
        (all False for a prefix that no item has)."""
        if not self.next_code_tables:
            raise ValueError("PrefixConstraints built with next_code_tables=False has no allowed_next tables: "
                             "test candidate prefixes with has_prefix.")
        sorted_keys, allowed = getattr(self, f"prefix_keys_{level}"), getattr(self, f"allowed_{level}")
        if sorted_keys.numel() == 0:  # empty catalogue
            return torch.zeros(*prefix_keys.shape, allowed.shape[1], dtype=torch.bool, device=prefix_keys.device)
        row, found = self._find(sorted_keys, prefix_keys)
        return allowed[row] & found.unsqueeze(-1)

    def has_prefix(self, level: int, prefix_keys: Tensor) -> Tensor:
        """prefix_keys [...] of length-`level` prefixes (1 <= level <= num_levels; num_levels: full codes) -> bool
        [...]: whether some item's code starts with the prefix. One `searchsorted` into that level's sorted keys."""
        if not 1 <= level <= self.num_levels:
            raise ValueError(f"has_prefix: level {level} outside [1, {self.num_levels}].")
        sorted_keys = self.full_keys if level == self.num_levels else getattr(self, f"prefix_keys_{level}")
        if sorted_keys.numel() == 0:  # empty catalogue
            return torch.zeros_like(prefix_keys, dtype=torch.bool)
        return self._find(sorted_keys, prefix_keys)[1]

    def lookup_keys(self, full_keys: Tensor) -> Tensor:
        """Full-code keys [...] -> item ids [...] (-1 where no item has the code)."""
        if self.full_keys.numel() == 0:
            return torch.full_like(full_keys, -1)
        row, found = self._find(self.full_keys, full_keys)
        return torch.where(found, self.full_key_items[row], torch.full_like(full_keys, -1))

    def lookup_items(self, codes: Tensor) -> Tensor:
        """Full codes [..., L] -> item ids [...] (-1 where no item has the code or a code is out of range)."""
        sizes = torch.tensor(self.vocab_sizes, device=codes.device)
        in_range = ((codes >= 0) & (codes < sizes)).all(-1)
        items = self.lookup_keys(self.prefix_key(codes.clamp(min=0)))
        return torch.where(in_range, items, torch.full_like(items, -1))

    def extra_repr(self) -> str:
        return f"vocab_sizes={self.vocab_sizes}, num_items={self.num_items}"
