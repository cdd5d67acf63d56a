"""Stage 2, tokenization: item vectors -> semantic IDs, with collision policies and quality reports."""
from recbole_genrec.tokenization.base import SemanticIds, Tokenizer
from recbole_genrec.tokenization.collision import COLLISION_POLICIES, apply_collision_policy, get_collision_policy
from recbole_genrec.tokenization.kmeans import balanced_kmeans, kmeans, sinkhorn_assignment
from recbole_genrec.tokenization.quality import (
    AUTO_CODEBOOK_SIZE,
    auto_codebook_size,
    collapse_warning,
    format_quality,
    prefix_cf_agreement,
    resolve_auto_codebook_size,
    sid_quality,
)
from recbole_genrec.tokenization.hkmeans import HierarchicalKMeansTokenizer, tree_path_codes
from recbole_genrec.tokenization.letter import LETTERTokenizer
from recbole_genrec.tokenization.opq import OPQTokenizer
from recbole_genrec.tokenization.rqkmeans import RQKMeansTokenizer
from recbole_genrec.tokenization.rqvae import RQVAETokenizer

# Tokenizer name (as in `tokenizer:` of a config) -> class. A new tokenizer adds one line here.
TOKENIZERS = {
    "RQVAE": RQVAETokenizer,
    "RQKMeans": RQKMeansTokenizer,
    "OPQ": OPQTokenizer,
    "LETTER": LETTERTokenizer,
    "HKMeans": HierarchicalKMeansTokenizer,
}


def build_tokenizer(name: str, params: dict | None = None) -> Tokenizer:
    if name not in TOKENIZERS:
        raise ValueError(f"Unknown tokenizer '{name}'. Available: {', '.join(TOKENIZERS)}. Names are case-sensitive.")
    return TOKENIZERS[name](**dict(params or {}))


def resolve_tokenizer_params(name: str, params: dict | None, n_items: int) -> dict | None:
    """`params` of tokenizer `name` with `codebook_size: auto` sized for `n_items` items (quality.auto_codebook_size,
    with the tokenizer's default number of levels when `params` sets none); other params are returned as they are."""
    tokenizer = TOKENIZERS.get(name)
    if tokenizer is not None and "codebook_size" not in tokenizer.default_params:
        return params  # not a parameter of this tokenizer: building it refuses the unknown parameter
    return resolve_auto_codebook_size(params, n_items, tokenizer.default_params if tokenizer else None)


__all__ = [
    "AUTO_CODEBOOK_SIZE",
    "COLLISION_POLICIES",
    "HierarchicalKMeansTokenizer",
    "LETTERTokenizer",
    "TOKENIZERS",
    "RQKMeansTokenizer",
    "RQVAETokenizer",
    "SemanticIds",
    "Tokenizer",
    "apply_collision_policy",
    "auto_codebook_size",
    "balanced_kmeans",
    "build_tokenizer",
    "collapse_warning",
    "format_quality",
    "get_collision_policy",
    "kmeans",
    "prefix_cf_agreement",
    "resolve_auto_codebook_size",
    "resolve_tokenizer_params",
    "sinkhorn_assignment",
    "sid_quality",
    "tree_path_codes",
]
