"""TIGER — Recommender Systems with Generative Retrieval (Rajput et al., NeurIPS 2023).

Representation: item text -> sentence embedding. Tokenization: RQ-VAE, 3 levels x 256 codes, plus a collision digit.
Backbone: T5-style encoder-decoder 4+4, d_model 128, 6 heads x 64, FFN 1024. Training: next-SID cross-entropy.
Inference: beam search over semantic IDs (constrained by default; `constrained_beam: False` is the paper's mode,
invalid IDs filtered afterwards). Defaults: properties/model/TIGER.yaml.
"""
from recbole_genrec.model.seq2seq import SemanticIdSeq2Seq


class TIGER(SemanticIdSeq2Seq):
    """TIGER is the plain composition: text representation + RQ-VAE tokenizer + encoder-decoder + next-SID CE +
    beam search; every part is shared with the other methods."""
