r"""LETTER's official generative model (HonghuiBao2000/LETTER, LETTER-TIGER/) trained and evaluated by our pipeline.

What runs official code, imported from the checkout at run time (nothing of it is copied here):
- the network and its initialisation: `LETTER-TIGER/modeling_letter.py` `LETTER` (a subclass of HF's
  `T5ForConditionalGeneration`), built as `finetune.py` builds it: `T5Config` of `ckpt/TIGER/config.json` (T5 v1.0:
  ReLU FFN, tied input/output table with the d_model**-0.5 output scaling, 32 relative-position buckets, layer norm
  eps 1e-6) with this run's widths and dropout, `vocab_size = len(tokenizer)`, `set_hyper(temperature)`,
  `resize_token_embeddings(len(tokenizer))`, `config.use_cache = False`; HF 4.39.3's T5 initialisation;
- the vocabulary: the T5 sentencepiece tokenizer of `ckpt/TIGER` (32,100 tokens) plus the code tokens
  `finetune.py` adds (`data.BaseDataset.get_new_tokens`: every code string of the index file, sorted);
- the input layout: our batches are mapped to the token ids the official `collator.Collator` gives the official
  `SeqRecDataset` strings (the history's codes concatenated, then `</s>`, right-padded with 0; labels = the target's
  codes + `</s>`), checked against the official Collator when the model is built;
- the loss: `LETTER.forward` -> `ranking_loss`: cross-entropy of `lm_logits / temperature` over the whole
  vocabulary (text pieces included), mean over the label tokens (the 4 codes and `</s>`);
- the decoding: `test.py`: the trained weights under HF's `T5ForConditionalGeneration` (test.py reloads the
  checkpoint into that class: `LETTER.forward` cannot run without labels), `generate` with the official
  `generation_trie.Trie` of `[0] + tokenizer.encode(code)` over every item's code string and
  `utils.prefix_allowed_tokens_fn`, test.py's arguments (beam = `beam_size`, all beams returned, `max_new_tokens`
  10, `early_stopping`), `tokenizer.batch_decode(skip_special_tokens=True)` and `evaluate.get_topk_results` (invalid
  strings at score -1000, sort by score). get_topk_results only returns hit flags against a target: it is handed a
  stand-in target per user that records, in order, the strings it is compared with and never equals any: that order
  is the ranking (the module never sees the target), mapped back to our items by code string.
What stays ours: RecBole's split and loaders, the semantic IDs (our LETTER tokenizer; the official RQ-VAE/ fits 256
codes per level only, see PARTS), the trainer (AdamW over every parameter, warm-up + cosine, clipping 1.0, selection
on validation NDCG@10) and RecBole's metrics.

Cost: the official vocabulary (32,100 sentencepiece pieces + the codes, 32,131 tokens at the quick size against 34 in
ours) sits in every softmax. On ml-100k at the --quick size (d_model 32, one thread of a 2-core CPU shared with
another run) one epoch of 97,171 rows took 414 s and ranking the 943 validation users 39 s (beam 10).

Used by benchmarks/official_parity.py (see its interface); `swapped_class(checkout)` returns the class.
"""
import contextlib
import importlib.util
import os
import sys
import types

OFFICIAL_REPO = "HonghuiBao2000/LETTER"
OFFICIAL_COMMIT = "8d0154e28de37dbb6e24871c508ad8ddb1921cda"
PARTS = (
    "Official (imported from the checkout, LETTER-TIGER/): the network and its initialisation (modeling_letter.py "
    "LETTER, a T5ForConditionalGeneration under transformers 4.39.3, built as finetune.py builds it from "
    "ckpt/TIGER/config.json with this run's widths and dropout, vocab = the ckpt/TIGER T5 sentencepiece tokenizer's "
    "32,100 pieces + the code tokens data.BaseDataset.get_new_tokens adds, set_hyper(ce_temperature), "
    "resize_token_embeddings, use_cache off in training); its loss (LETTER.ranking_loss: cross-entropy of "
    "logits / temperature over the whole vocabulary, labels = 4 codes + </s>, encoder input = the history's codes + "
    "</s>, layout checked against the official collator.Collator); its decoding (test.py: the weights under HF "
    "T5ForConditionalGeneration, generate with the generation_trie.Trie of [0] + tokenizer.encode(code) for every "
    "item and utils.prefix_allowed_tokens_fn, beam = beam_size, all beams returned, max_new_tokens 10, "
    "early_stopping; batch_decode and evaluate.get_topk_results, its order read through a stand-in target that "
    "never matches), hits scored by RecBole on the item. Ours: RecBole's split and loaders, the semantic IDs (our "
    "LETTER tokenizer: the official RQ-VAE/ tokenizer runs at 256 codes per level only, not at the parity and quick "
    "sizes of 32 and 8: models/vq.py init_emb copies a hard-coded 256 size-constrained k-means centres into the "
    "codebook (RuntimeError for 32 codes), and trainer.py constrained_km groups every codebook into 10 clusters of "
    "at most 60 codes, which KMeansConstrained refuses for 8 codes (fewer than 10) and for 32 (60 > 32)), the batch "
    "size in rows, and the trainer (RecBole AdamW with weight decay on every parameter, warm-up + cosine, clipping "
    "1.0, selection on validation NDCG@10)."
)
SETTINGS = {}

# The official modules the swap calls, loaded under private names: the checkout's `data`, `utils`, `evaluate` would
# otherwise shadow other modules of the process (HF `evaluate`, ...). `utils` imports `data`.
_OFFICIAL_FILES = ("modeling_letter", "generation_trie", "collator", "data", "evaluate", "utils")
_PRIVATE = "letter_official"
_MISSING = object()
# generate_indices.py: prefix = ["<a_{}>", "<b_{}>", ...], the code token of each level
CODE_PREFIXES = ("<a_{}>", "<b_{}>", "<c_{}>", "<d_{}>", "<e_{}>", "<f_{}>")
# Users per official generate call: run_test.sh's --test_batch_size 32 (rows decode independently; the batch only
# sets the padding width and the memory of HF's beam, which scores every beam over the ~32k-token vocabulary).
DECODE_CHUNK = 32


def _load_official(checkout):
    """The official LETTER-TIGER modules (by file, under `letter_official.<name>`); while one is executed, the
    official modules loaded before it are visible under their bare names (utils.py: `from data import ...`)."""
    folder = os.path.join(os.path.abspath(checkout), "LETTER-TIGER")
    if not os.path.isfile(os.path.join(folder, "modeling_letter.py")):
        raise FileNotFoundError(f"{checkout} is not a checkout of {OFFICIAL_REPO} "
                                f"(no LETTER-TIGER/modeling_letter.py)")
    modules = {}
    for name in _OFFICIAL_FILES:
        qualified = f"{_PRIVATE}.{name}"
        loaded = sys.modules.get(qualified)
        if loaded is not None:
            if not os.path.abspath(loaded.__file__).startswith(folder):
                raise ImportError(f"{qualified} is already imported from {loaded.__file__}, not from {folder}")
            modules[name] = loaded
            continue
        spec = importlib.util.spec_from_file_location(qualified, os.path.join(folder, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        saved = {bare: sys.modules.get(bare, _MISSING) for bare in modules}
        sys.modules.update(modules)
        try:
            spec.loader.exec_module(module)
        finally:
            for bare, previous in saved.items():
                if previous is _MISSING:
                    sys.modules.pop(bare, None)
                else:
                    sys.modules[bare] = previous
        sys.modules[qualified] = module
        modules[name] = module
    return types.SimpleNamespace(**modules), folder


class _StandIn:
    """A target that equals no prediction and records, in order, every string compared with it: get_topk_results
    compares its sorted beam with the target one by one, so the record is the ranking."""
    __slots__ = ("seen",)

    def __init__(self):
        self.seen = []

    def __eq__(self, other):
        self.seen.append(other)
        return False

    def __ne__(self, other):
        return True

    __hash__ = object.__hash__


def code_tokens(codes):
    """Codes [n, L] -> the official index file's entries: level l code c is the token `CODE_PREFIXES[l].format(c)`
    (generate_indices.py); an item's string is their concatenation (data.py `_remap_items`)."""
    if codes.shape[1] > len(CODE_PREFIXES):
        raise ValueError(f"the official code prefixes name {len(CODE_PREFIXES)} levels, these IDs have "
                         f"{codes.shape[1]}")
    return [[CODE_PREFIXES[level].format(int(code)) for level, code in enumerate(row)] for row in codes.tolist()]


@contextlib.contextmanager
def _as_t5(model, t5_class):
    """The official test.py decodes with the trained weights loaded into HF's T5ForConditionalGeneration (LETTER's
    forward computes its loss unconditionally and fails without labels); the same parameters, that class's forward."""
    original = model.__class__
    model.__class__ = t5_class
    try:
        yield model
    finally:
        model.__class__ = original


def swapped_class(checkout):
    """Our LETTER (semantic IDs, tokenizer hook, trainer hooks) with the official LETTER-TIGER network, loss and
    decoding."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    from recbole_genrec.model import letter as letter_module
    from recbole_genrec.model.letter import LETTER

    official, folder = _load_official(checkout)
    base_model = os.path.join(folder, "ckpt", "TIGER")  # utils.py --base_model default ./ckpt/TIGER

    class OfficialModuleLETTER(LETTER):
        official_checkout = os.path.abspath(checkout)

        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            del self.backbone  # the official network replaces it
            tokenizer = T5Tokenizer.from_pretrained(base_model, model_max_length=512)  # finetune.py:38-41
            if tokenizer.pad_token_id is None:  # collator.py: Collator.__init__
                tokenizer.pad_token_id = 0
            # Our items as the official index file holds them (item token -> code tokens).
            item_tokens = list(dataset.field2id_token[dataset.iid_field])
            split = code_tokens(self.item_codes[1:])
            strings = ["".join(codes) for codes in split]
            bare = official.data.BaseDataset.__new__(official.data.BaseDataset)
            bare.new_tokens, bare.all_items = None, None
            bare.indices = {str(index): codes for index, codes in enumerate(split)}
            tokenizer.add_tokens(bare.get_new_tokens())  # finetune.py:47
            self.tokenizer = tokenizer
            self.official = official

            t5_config = T5Config.from_pretrained(base_model)  # finetune.py:37
            t5_config.update(dict(d_model=int(config["d_model"]), d_ff=int(config["d_ff"]),
                                  num_heads=int(config["num_heads"]), d_kv=int(config["d_kv"]),
                                  num_layers=int(config["num_encoder_layers"]),
                                  num_decoder_layers=int(config["num_decoder_layers"]),
                                  dropout_rate=float(config["dropout"])))
            t5_config.vocab_size = len(tokenizer)  # finetune.py:48
            self.letter = official.modeling_letter.LETTER(t5_config)  # finetune.py:59-61
            self.letter.set_hyper(float(config["ce_temperature"] or 1.0))
            self.letter.resize_token_embeddings(len(tokenizer))
            self.letter.config.use_cache = False  # finetune.py:107 (training); generate() keeps its cache

            # Item -> official token ids of its codes (row 0, the padding item: pad tokens).
            table = torch.zeros(len(item_tokens), self.n_levels, dtype=torch.long)
            table[1:] = torch.tensor([tokenizer.convert_tokens_to_ids(codes) for codes in split], dtype=torch.long)
            self.register_buffer("official_ids", table, persistent=False)
            self.eos_id = int(tokenizer.eos_token_id)
            # Decoding: test.py:53-62's trie over get_all_items() (the set of code strings) and the string -> item
            # map. A string shared by several items (IDs that LETTER's collision pass left duplicate) names the first
            # of them; the official evaluate.py would count it as a hit for each (it compares code strings).
            self.all_items = bare.get_all_items()
            self.trie = official.generation_trie.Trie(
                [[0] + tokenizer.encode(candidate) for candidate in sorted(self.all_items)])
            self.item_of_string = {}
            for item, text in enumerate(strings, start=1):
                self.item_of_string.setdefault(text, item)
            self.decode_chunk = DECODE_CHUNK
            self._check_layout(strings)

        # ---- the official input layout ------------------------------------------------------------------------
        def encoder_ids(self, items):
            """History items [B, T] (right-padded with 0) -> the Collator's (input_ids, attention_mask) [B, S]: the
            items' code tokens, </s>, then 0, as wide as the longest row."""
            tokens = self.official_ids[items].flatten(1)
            lengths = (items > 0).sum(1) * self.n_levels
            tokens = torch.cat([tokens, tokens.new_zeros(len(items), 1)], dim=1)
            tokens[torch.arange(len(items), device=items.device), lengths] = self.eos_id
            tokens = tokens[:, :int(lengths.max()) + 1]
            if tokens.shape[1] > self.tokenizer.model_max_length:
                raise ValueError(f"{tokens.shape[1]} input tokens: the official Collator truncates at "
                                 f"{self.tokenizer.model_max_length}")
            return tokens, (tokens != 0).long()

        def labels(self, items):
            """Target items [N] -> the Collator's labels [N, L + 1]: codes, </s> (equal lengths: no -100)."""
            codes = self.official_ids[items]
            return torch.cat([codes, codes.new_full((len(items), 1), self.eos_id)], dim=1)

        def _check_layout(self, strings):
            """Our tensors against the official Collator on the official dataset's strings, once."""
            n = min(6, len(strings))
            if n == 0:
                return
            items = torch.arange(1, n + 1)
            history = torch.stack([torch.where(torch.arange(n) <= row, items, 0) for row in range(n)])
            samples = [{"input_ids": "".join(strings[:row + 1]), "labels": strings[row]} for row in range(n)]
            batch = self.official.collator.Collator(types.SimpleNamespace(only_train_response=False),
                                                    self.tokenizer)(samples)
            input_ids, mask = self.encoder_ids(history)
            if not (torch.equal(batch["input_ids"], input_ids) and torch.equal(batch["attention_mask"], mask)
                    and torch.equal(batch["labels"], self.labels(items))):
                raise AssertionError("the official Collator lays these samples out otherwise than the swap's glue")

        # ---- training: modeling_letter.py LETTER.forward / ranking_loss ---------------------------------------
        def calculate_loss(self, interaction):
            items, _ = self.history(interaction)
            input_ids, attention_mask = self.encoder_ids(items)
            labels = self.labels(interaction[self.POS_ITEM_ID])
            return self.letter(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss

        # ---- inference: test.py ------------------------------------------------------------------------------------
        def official_generate(self, items):
            """test.py:90-107 for one batch of histories: (decoded strings [B * beam], sequence scores [B * beam])."""
            input_ids, attention_mask = self.encoder_ids(items)
            with _as_t5(self.letter, T5ForConditionalGeneration) as model:
                output = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=10,
                    prefix_allowed_tokens_fn=self.official.utils.prefix_allowed_tokens_fn(self.trie),
                    num_beams=self.beam_size, num_return_sequences=self.beam_size, output_scores=True,
                    return_dict_in_generate=True, early_stopping=True)
            strings = self.tokenizer.batch_decode(output["sequences"], skip_special_tokens=True)
            return strings, output["sequences_scores"].float().cpu()

        def generate_topk(self, interaction, k):
            items, _ = self.history(interaction)
            ranked = torch.full((len(items), k), -1, dtype=torch.long)
            scores = torch.full((len(items), k), float("-inf"))
            with torch.no_grad():
                for start in range(0, len(items), self.decode_chunk):
                    chunk = items[start:start + self.decode_chunk]
                    strings, beam_scores = self.official_generate(chunk)
                    stand_ins = [_StandIn() for _ in range(len(chunk))]
                    # get_topk_results sets the score of a string naming no item to -1000 (in place)
                    self.official.evaluate.get_topk_results(strings, beam_scores, stand_ins, self.beam_size,
                                                            all_items=self.all_items)
                    for row, stand_in in enumerate(stand_ins):
                        beam = strings[row * self.beam_size:(row + 1) * self.beam_size]
                        score_of = dict(zip([text.strip().replace(" ", "") for text in beam],
                                            beam_scores[row * self.beam_size:(row + 1) * self.beam_size].tolist()))
                        column = 0
                        for text in stand_in.seen:
                            if column == k:
                                break
                            item = self.item_of_string.get(text)
                            if item is not None:  # a string naming no item keeps no slot (RecBole scores items)
                                ranked[start + row, column] = item
                                scores[start + row, column] = score_of[text]
                                column += 1
            return ranked.to(items.device), scores.to(items.device)

    # Checkpoints name the model class; the plugin's allow-list loads classes of its model modules.
    OfficialModuleLETTER.__module__ = letter_module.__name__
    OfficialModuleLETTER.__qualname__ = OfficialModuleLETTER.__name__
    letter_module.OfficialModuleLETTER = OfficialModuleLETTER
    return OfficialModuleLETTER
