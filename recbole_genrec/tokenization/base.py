"""Stage 2, tokenization: item vectors -> semantic IDs (a short code per item), with a named collision policy and
a quality report. Concrete tokenizers subclass `Tokenizer` and implement `_fit_codes`."""
import json
import logging
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch

from recbole_genrec.tokenization.collision import (
    POLICIES_NEEDING_DISTANCES,
    apply_collision_policy,
    get_collision_policy,
)
from recbole_genrec.tokenization.quality import (
    AUTO_CODEBOOK_SIZE,
    format_quality,
    prefix_cf_agreement,
    resolve_auto_codebook_size,
    sid_quality,
)

logger = logging.getLogger("recbole_genrec")


@dataclass
class SemanticIds:
    """codes [n_items + 1, L] long, row 0 = padding (all zeros), rows 1..n = items in RecBole's internal id order;
    vocab_sizes: per-level vocabulary size (len L, the collision digit level included when appended);
    quality: JSON-serialisable report (see quality.py)."""

    codes: torch.Tensor
    vocab_sizes: list
    quality: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.codes) - 1

    @property
    def n_levels(self) -> int:
        return self.codes.shape[1]

    def save(self, path):
        torch.save(
            {"codes": self.codes.cpu().long(), "vocab_sizes": [int(v) for v in self.vocab_sizes], "quality": self.quality},
            path,
        )

    @classmethod
    def load(cls, path) -> "SemanticIds":
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(codes=state["codes"], vocab_sizes=list(state["vocab_sizes"]), quality=dict(state["quality"]))

    @classmethod
    def concat(cls, parts: dict) -> "SemanticIds":
        """Several ID sets of the same items side by side (EAGER's behaviour and semantic codes), as one table of
        codes whose columns are the parts in order; `quality["parts"]` keeps each part's report and level count."""
        from recbole_genrec.tokenization.quality import sid_quality

        codes = torch.cat([part.codes for part in parts.values()], dim=1)
        vocab_sizes = [size for part in parts.values() for size in part.vocab_sizes]
        quality = sid_quality(codes[1:], vocab_sizes)
        quality["parts"] = {name: {**part.quality, "levels": part.n_levels} for name, part in parts.items()}
        return cls(codes=codes, vocab_sizes=vocab_sizes, quality=quality)

    def export(self, item_tokens, path):
        """Write JSON {external item token: [codes...]} for items 1..n; item_tokens[i] is internal id i's token."""
        item_tokens = list(item_tokens)
        if len(item_tokens) != len(self.codes):
            raise ValueError(f"{len(item_tokens)} item tokens for {len(self.codes)} code rows (padding included)")
        rows = self.codes.tolist()
        mapping = {str(item_tokens[item]): rows[item] for item in range(1, len(rows))}
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(mapping, handle)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    # faiss has no global seed: k-means receives `seed` explicitly (kmeans.py).


class Tokenizer(ABC):
    """Item vectors -> semantic IDs. Subclasses set `name` and `default_params` and implement `_fit_codes`.

    Parameters are validated against `default_params` (plus the common `collision` and `device`), so a misspelt
    parameter fails at once instead of being silently ignored; `self.params` is the resolved dict."""

    name = "Tokenizer"
    default_params: dict = {}
    # Part of the semantic-ID cache key: raise it when a change to the fit gives other codes for the same parameters
    # and inputs, so that IDs cached by the old code are refitted instead of loaded.
    revision = 1
    common_params = {"collision": "append_digit", "device": "cpu"}

    def __init__(self, **params):
        known = {**self.common_params, **self.default_params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(
                f"Unknown parameter(s) {unknown} for tokenizer {self.name}. Known: {', '.join(sorted(known))}."
            )
        self.params = {**known, **params}
        get_collision_policy(self.params["collision"])  # fail before a long fit, not after
        if "codebook_size" in self.params:
            size = self.params["codebook_size"]
            if size != AUTO_CODEBOOK_SIZE and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                raise ValueError(f"codebook_size of tokenizer {self.name} must be a positive integer or "
                                 f"'{AUTO_CODEBOOK_SIZE}' (sized from the number of items), got {size!r}.")
        # Set by `_fit_codes` when the collision policy needs it: [n_items, K] squared distances of each item's
        # last-level residual to the last-level codes.
        self.last_level_distances = None
        # Optional JSON-serialisable facts about the fit (epochs, final loss, ...), stored in the quality report.
        self.fit_report = {}

    @property
    def needs_last_level_distances(self) -> bool:
        return self.params["collision"] in POLICIES_NEEDING_DISTANCES

    def raw_vocab_sizes(self, raw_codes: torch.Tensor) -> list:
        """Vocabulary size of each level of the raw codes; default: `codebook_size` at every level."""
        return [int(self.params["codebook_size"])] * raw_codes.shape[1]

    @abstractmethod
    def _fit_codes(self, vectors: np.ndarray, fit_mask: np.ndarray, seed: int) -> torch.Tensor:
        """Train on vectors[fit_mask] and code every item. vectors: float32 [n_items, d] (no padding row);
        fit_mask: bool [n_items]. Returns long codes [n_items, L0]. When `self.needs_last_level_distances`, also
        set `self.last_level_distances`."""

    #: True for tokenizers that need collaborative item vectors in `fit` (LETTER's CF alignment).
    needs_collaborative = False

    def fit(self, vectors, fit_mask=None, seed: int = 2020, collaborative=None) -> SemanticIds:
        """vectors: float [n_items + 1, d], row 0 = padding (ignored). fit_mask: bool [n_items + 1], the items the
        quantiser is trained on (None = all items 1..n); every item 1..n gets a code either way. collaborative:
        optional float [n_items + 1, d_cf] CF item vectors (zero rows = items without a CF signal); a tokenizer
        with `needs_collaborative` trains on them, and with any tokenizer they add the prefix/CF agreement to the
        quality report."""
        item_vectors, item_fit_mask = self._check_inputs(vectors, fit_mask)
        self.collaborative = None
        if collaborative is not None:
            collaborative = np.asarray(collaborative, dtype=np.float32)
            if collaborative.ndim != 2 or len(collaborative) != len(vectors):
                raise ValueError(f"collaborative vectors must be [n_items + 1, d] = [{len(vectors)}, d], got shape "
                                 f"{collaborative.shape}")
            self.collaborative = np.ascontiguousarray(collaborative[1:])
        elif self.needs_collaborative:
            raise ValueError(f"Tokenizer {self.name} needs collaborative item vectors: call fit(..., collaborative=) "
                             f"(the model's tokenizer hook passes representation.item_cf_embeddings).")
        seed_everything(seed)
        self.last_level_distances, self.fit_report = None, {}
        # `codebook_size: auto` (usually resolved from the dataset's item count before the fit is keyed and
        # cached: GenRecDataset.build) is sized here for direct callers; self.params then holds the number.
        self.params = resolve_auto_codebook_size(self.params, len(item_vectors))
        raw_codes = torch.as_tensor(self._fit_codes(item_vectors, item_fit_mask, seed), dtype=torch.long).cpu()
        if raw_codes.ndim != 2 or len(raw_codes) != len(item_vectors):
            raise RuntimeError(f"{self.name} returned codes of shape {tuple(raw_codes.shape)} for {len(item_vectors)} items")
        raw_vocab_sizes = self.raw_vocab_sizes(raw_codes)
        quality = sid_quality(raw_codes, raw_vocab_sizes)
        policy = self.params["collision"]
        codes, vocab_sizes = apply_collision_policy(policy, raw_codes, raw_vocab_sizes, self.last_level_distances)
        final_quality = sid_quality(codes, vocab_sizes)
        quality.update(
            tokenizer=self.name,
            n_fit_items=int(item_fit_mask.sum()),
            collision_policy=policy,
            n_unique_ids_after_policy=final_quality["n_unique_ids"],
            collision_rate_after_policy=final_quality["collision_rate"],
            vocab_sizes_after_policy=final_quality["vocab_sizes"],
        )
        if self.fit_report:
            quality["fit_report"] = dict(self.fit_report)
        if self.collaborative is not None:
            quality["prefix_cf_agreement"] = prefix_cf_agreement(codes, self.collaborative)
        logger.info(f"{self.name}: {format_quality(quality)}")  # a collapse is judged by fit_semantic_ids
        self.last_level_distances = None  # can be large; only the policy needed it
        padding_row = torch.zeros(1, codes.shape[1], dtype=torch.long)
        return SemanticIds(codes=torch.cat([padding_row, codes]), vocab_sizes=vocab_sizes, quality=quality)

    def _check_inputs(self, vectors, fit_mask):
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().cpu().numpy()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) < 2:
            raise ValueError(f"Tokenizer input must be [n_items + 1, d] with n_items >= 1, got shape {vectors.shape}")
        item_vectors = np.ascontiguousarray(vectors[1:])
        bad_rows = np.flatnonzero(~np.isfinite(item_vectors).all(1)) + 1
        if len(bad_rows):
            raise ValueError(
                f"Item vectors contain NaN or inf in {len(bad_rows)} rows (internal item ids {bad_rows[:10].tolist()}"
                f"{' ...' if len(bad_rows) > 10 else ''}); fix the representation stage before tokenizing."
            )
        if fit_mask is None:
            item_fit_mask = np.ones(len(item_vectors), dtype=bool)
        else:
            fit_mask = np.asarray(fit_mask.cpu() if isinstance(fit_mask, torch.Tensor) else fit_mask, dtype=bool)
            if fit_mask.shape != (len(vectors),):
                raise ValueError(f"fit_mask must be bool [n_items + 1] = [{len(vectors)}], got shape {fit_mask.shape}")
            item_fit_mask = fit_mask[1:].copy()
        if not item_fit_mask.any():
            raise ValueError("fit_mask selects no item to fit the tokenizer on")
        return item_vectors, item_fit_mask


def standardization_stats(vectors: np.ndarray, fit_mask: np.ndarray):
    """(mean [d], std [d]) of the fit items; constant dimensions get std 1 so they map to 0 instead of NaN."""
    fit_vectors = vectors[fit_mask].astype(np.float64)
    mean = fit_vectors.mean(0)
    std = fit_vectors.std(0)
    std[std < 1e-8] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)
