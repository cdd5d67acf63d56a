"""Stage 2, tokenization: item vectors -> semantic IDs, with collision policies and quality reports."""
from recbole_genrec.tokenization.base import SemanticIds, Tokenizer
from recbole_genrec.tokenization.collision import COLLISION_POLICIES, apply_collision_policy, get_collision_policy
from recbole_genrec.tokenization.kmeans import balanced_kmeans, kmeans, sinkhorn_assignment
from recbole_genrec.tokenization.quality import collapse_warning, format_quality, prefix_cf_agreement, sid_quality
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


__all__ = [
    "COLLISION_POLICIES",
    "HierarchicalKMeansTokenizer",
    "LETTERTokenizer",
    "TOKENIZERS",
    "RQKMeansTokenizer",
    "RQVAETokenizer",
    "SemanticIds",
    "Tokenizer",
    "apply_collision_policy",
    "balanced_kmeans",
    "build_tokenizer",
    "collapse_warning",
    "format_quality",
    "get_collision_policy",
    "kmeans",
    "prefix_cf_agreement",
    "sinkhorn_assignment",
    "sid_quality",
    "tree_path_codes",
]
