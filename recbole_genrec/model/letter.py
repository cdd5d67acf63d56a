"""LETTER — Learnable Item Tokenization for Generative Recommendation (Wang et al., CIKM 2024), as LETTER-TIGER.

Representation: item text -> sentence embedding, plus collaborative item embeddings of RecBole's SASRec trained on
the training split (representation/collaborative.py, 32-d). Tokenization: LETTER's RQ-VAE, 4 levels x 256 codes,
with CF alignment, diversity regularisation and Sinkhorn balancing of the last level (tokenization/letter.py);
remaining collisions go to the shared collision policy. Backbone and inference: TIGER's encoder-decoder and the
shared trie-constrained beam search (beam 20). Training: the ranking-guided generation loss, i.e. the next-SID
cross-entropy with logits divided by a temperature tau < 1 (`ce_temperature`), which sharpens the penalty on hard
negatives. Defaults: properties/model/LETTER.yaml.
"""
from recbole_genrec.data.semantic_ids import fit_semantic_ids
from recbole_genrec.model.seq2seq import SemanticIdSeq2Seq
from recbole_genrec.representation import item_cf_embeddings, item_text_embeddings


class LETTER(SemanticIdSeq2Seq):
    @classmethod
    def build_semantic_ids(cls, config, dataset, train_dataset):
        """Text embeddings + CF embeddings (training split only) -> LETTER's tokenizer -> semantic IDs."""
        return fit_semantic_ids(
            config, dataset, item_text_embeddings(config, dataset),
            fit_mask=cls.tokenizer_fit_mask(config, train_dataset),
            collaborative=item_cf_embeddings(config, dataset, train_dataset),
        )
