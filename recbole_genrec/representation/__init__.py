"""Stage 1: item representations (continuous vectors) from item content and collaborative signals."""
from recbole_genrec.representation.collaborative import item_cf_embeddings
from recbole_genrec.representation.text import (item_text_embeddings, item_text_tokens, load_local_t5, read_item_text,
                                                resolve_encoder_path)

__all__ = ["item_cf_embeddings", "item_text_embeddings", "item_text_tokens", "load_local_t5", "read_item_text",
           "resolve_encoder_path"]
