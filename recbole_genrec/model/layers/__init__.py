"""Shared backbones and layers of the generative recommenders."""
from recbole_genrec.model.layers.cosine import cosine_logits, unit_rows
from recbole_genrec.model.layers.decoder_only import DecoderOnly
from recbole_genrec.model.layers.attention import Dropout, attention, dropout
from recbole_genrec.model.layers.encoder_decoder import DecoderState, EncoderDecoder, RMSNorm

__all__ = [
    "DecoderOnly", "DecoderState", "Dropout", "EncoderDecoder", "RMSNorm", "attention", "cosine_logits", "dropout",
    "unit_rows",
]
