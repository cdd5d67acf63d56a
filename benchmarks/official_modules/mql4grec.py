r"""MQL4GRec's official model module (zhaijianyang/MQL4GRec) trained and evaluated by our pipeline.

What runs official code, imported from the checkout at run time (nothing of it is copied here):
- the network: Hugging Face's `T5ForConditionalGeneration`, built as `finetune.py` builds it (config
  `config/ckpt/config.json`: T5 v1.0, ReLU FFN, tied output layer, 32 position buckets; the widths are this run's),
  HF's own initialisation, `resize_token_embeddings` to the official vocabulary: the T5 sentencepiece tokenizer of
  `config/ckpt` (32,100 tokens) plus the code tokens `finetune.py` adds (`data.BaseDataset.get_new_tokens` of each
  task's dataset, in task order) or, where a pre-training stage is involved, `pretrain.py`'s
  (`BaseDataset.get_all_tokens`: every code of all 8 levels); the soft prompts are the tokenizer's pieces at ids
  100 * (task index + 1) ... joined as a string and re-tokenised, as `finetune.py` makes them (so a prompt may come
  out as other pieces, e.g. a leading '▁');
- the input layout: our batches are mapped to the token ids the official `collator.Collator` produces from the
  official datasets' strings (history codes then `</s>`, right-padded with 0; labels = 4 codes + `</s>`), which is
  checked against the official Collator once when the model is built;
- the loss: the HF model's own label cross-entropy, over the whole batch of mixed tasks at once (a mean over all
  label tokens, the Trainer's);
- the decoding: per modality `model.generate` with the official `generation_trie.Trie` of `[0] +
  tokenizer.encode(code)` for every item and `prefix_allowed_tokens_fn`, with `test_ddp_save.py`'s arguments (beam
  = `beam_size`, all beams returned, `max_new_tokens` 10, `early_stopping`), the decoded strings, and the fusion of
  the text and image lists by the official `ensemble.get_sort_results` + `ensemble.get_topk_results_ensemble` (its
  code -> item map: the first item of the dataset's code file holding the code, as its `index2item_id[...][0]`).
  The fusion only returns hit flags against a target; it is handed a stand-in target per user that records the
  items it is compared with, in rank order, and never equals any: that order is the ranking (the module never sees
  the target). Hits are then scored by RecBole on the item, not on the official text code (the official ensemble
  counts a predicted text code as a hit for every item sharing it).
- model selection (each epoch's validation) fuses the same official beams, found by the shared beam search over the
  official network instead of HF `generate` (`selection_generate`): an exact search over the trie's codes with the
  log-probabilities over the whole official vocabulary, each beam scored as HF scores it ((code log-probs +
  log p(</s>)) / 5) and in HF's order. It returns official_generate's strings and scores (tests; and each run
  checks its first validation users against official_generate before selecting on it). The test split is ranked by
  `generate` itself.
What stays ours: RecBole's split and loaders, the published codes, which samples a batch holds
(`MQL4GRec.calculate_loss`: each target in every sequence task, `fusionseqrec`'s 50/50 modality, translation
samples drawn from the catalogue at the official datasets' ratio), the batch size counted in samples
(`prepare_training_split`), the trainer (AdamW, warm-up + cosine, clipping, validation NDCG@10 selection).

Cost: the official vocabulary (32,100 sentencepiece pieces + the codes, 33,932 tokens on amazon-instruments-mm,
against 2,062 in ours) sits in every softmax, and HF's constrained beam builds a full-vocabulary mask per beam in
Python: at the parity widths (d_model 64, 1 + 1 layers) on a shared 2-core CPU, one step of 81 targets took 2.1 s
(ours 0.3 s) and ranking 64 users 20 s (ours 0.2 s), i.e. ~37 minutes an epoch and ~1.5 hours a full evaluation of
the 17,112 users through `generate` (so validation goes through `selection_generate`). peers.plugin_config reads
`peers.CLIP[model]`, which has no MQL4GRec entry: the caller adds one (HF Trainer's max_grad_norm 1.0, as
MQL4GRec.yaml).

Used by benchmarks/official_parity.py (see its interface); `swapped_class(checkout)` returns the class.
"""
import importlib.util
import json
import math
import os
import sys
import types

OFFICIAL_REPO = "zhaijianyang/MQL4GRec"
OFFICIAL_COMMIT = "5ad9c27ff904f56f056714534c25c12af4958baf"
PARTS = ("Official (imported from the checkout): the network, HF T5ForConditionalGeneration built from the official "
         "config/ckpt/config.json with this run's widths, HF's initialisation and resize_token_embeddings to the "
         "official vocabulary (the T5 sentencepiece tokenizer's 32,100 tokens plus the code tokens finetune.py "
         "adds via data.BaseDataset.get_new_tokens, soft prompts = tokenizer pieces at ids 100*(task index+1) "
         "re-tokenised as finetune.py does); its loss (the HF model's label cross-entropy over the whole mixed batch, "
         "labels = 4 codes + </s>, inputs ending in </s>, layout checked against the official collator.Collator); "
         "its decoding (HF generate with generation_trie.Trie prefix constraints per modality, test_ddp_save.py's "
         "arguments) and its list fusion (ensemble.get_sort_results + get_topk_results_ensemble, the ranking read "
         "from the order it compares candidates with a stand-in target that never matches), with hits scored by "
         "RecBole at item level instead of the official text-code level; model selection fuses the same beams and "
         "scores found by the shared beam search over the official network (checked equal to generate's on each "
         "run's first validation users), the test split by generate itself. Ours: RecBole's split and loaders, the "
         "published codes, the task mix of each batch (MQL4GRec.calculate_loss: every target in each sequence task, "
         "fusionseqrec 50/50, translation samples drawn from the catalogue at the official ratio), the batch size "
         "in samples, and the trainer (AdamW, warm-up + cosine, clipping, selection on validation NDCG@10). No "
         "pre-training in the parity runs (pretrain_datasets unset); if set, the swap pre-trains with the official "
         "pretrain.py vocabulary and fine-tunes from that checkpoint's T5 weights.")
SETTINGS = {}

# The official modules the swap calls, loaded under private names (the checkout's `data`, `utils`, `evaluate` and
# `test` would otherwise shadow other modules of the process).
_OFFICIAL_FILES = ("generation_trie", "collator", "data", "evaluate", "ensemble")
_MISSING = object()


def _load_official(checkout):
    """The official modules (by file, under `mql4grec_official.<name>`); `ensemble.py`'s `from evaluate import ...`
    gets the checkout's evaluate.py."""
    if checkout not in sys.path:
        sys.path.append(checkout)  # appended: the checkout never shadows an installed or standard module
    modules = {}
    for name in _OFFICIAL_FILES:
        qualified = f"mql4grec_official.{name}"
        if qualified in sys.modules:
            modules[name] = sys.modules[qualified]
            continue
        spec = importlib.util.spec_from_file_location(qualified, os.path.join(checkout, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        saved = sys.modules.get("evaluate", _MISSING)
        if "evaluate" in modules:
            sys.modules["evaluate"] = modules["evaluate"]
        try:
            spec.loader.exec_module(module)
        finally:
            if saved is _MISSING:
                sys.modules.pop("evaluate", None)
            else:
                sys.modules["evaluate"] = saved
        sys.modules[qualified] = module
        modules[name] = module
    return types.SimpleNamespace(**modules)


class _StandIn:
    """A target that equals no item and records, in order, every item compared with it: the official fusion compares
    its sorted candidates with the target one by one, so the record is the fused ranking."""
    __slots__ = ("seen",)

    def __init__(self):
        self.seen = []

    def __eq__(self, other):
        self.seen.append(other)
        return False

    def __ne__(self, other):
        return True

    __hash__ = object.__hash__


class _DecoderState:
    """The HF T5 decoder's state for the shared beam search: encoder output, its mask and the key/value cache
    (transformers 4.x's tuples), rows selected together."""

    def __init__(self, memory, mask, past):
        self.memory, self.mask, self.past = memory, mask, past

    def index_select(self, index):
        past = None if self.past is None else tuple(tuple(t.index_select(0, index) for t in layer)
                                                    for layer in self.past)
        return _DecoderState(self.memory.index_select(0, index), self.mask.index_select(0, index), past)


def swapped_class(checkout):
    """Our MQL4GRec (codes, catalogue, task mix, trainer hooks) with the official network, loss and decoding."""
    import torch

    checkout = os.path.abspath(checkout)
    official = _load_official(checkout)
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    from recbole_genrec.inference import PrefixConstraints, SemanticIdVocab, beam_search
    from recbole_genrec.model import mql4grec as mql4grec_module
    from recbole_genrec.model.mql4grec import MODALITIES, MQL4GRec
    from recbole_genrec.tokenization.published import published_codes_path

    base_model = os.path.join(checkout, "config", "ckpt")  # finetune.py / pretrain.py --base_model ./config/ckpt

    class OfficialModuleMQL4GRec(MQL4GRec):
        def __init__(self, config, dataset):
            self._pretrained_path = None
            super().__init__(config, dataset)
            del self.backbone, self.catalogues  # the official network and tries replace them
            tasks = list(config["mql4grec_tasks"])
            prompt_num = int(config["prompt_tokens"])
            pretraining = bool(self._pretrained_path) or str(config["dataset"]).startswith("pretrain-")
            tokenizer = T5Tokenizer.from_pretrained(base_model, model_max_length=512)  # finetune.py:40-43
            # Codes as the official index files hold them: file order = the official item ids.
            files = {}
            for modality in MODALITIES:
                with open(published_codes_path(config, modality), encoding="utf-8") as handle:
                    files[modality] = json.load(handle)
            # Vocabulary: finetune.py:76-78 adds each task dataset's get_new_tokens() in task order; pretrain.py:62
            # (and a fine-tuning run that loads its tokenizer) all codes of all levels (get_all_tokens).
            for task in tasks if not pretraining else tasks[-1:]:
                bare = official.data.BaseDataset.__new__(official.data.BaseDataset)
                bare.args = types.SimpleNamespace(tasks=",".join(tasks), code_num=int(config["code_num"]))
                bare.new_tokens, bare.fg_image_indices = None, None
                bare.indices = files["image" if task == "seqimage" else "text"]
                bare.image_indices = files["image"] if task not in ("seqrec", "seqimage") else None
                tokenizer.add_tokens(bare.get_all_tokens() if pretraining else bare.get_new_tokens())
            self.tokenizer = tokenizer
            # Soft prompts, finetune.py:53-70: the pieces at ids 100 * (i + 1) ... joined into one string.
            self.soft_prompts = {task: "".join(tokenizer.convert_ids_to_tokens(
                list(range(100 * (i + 1), 100 * (i + 1) + prompt_num)))) for i, task in enumerate(tasks)}

            t5_config = T5Config.from_pretrained(base_model)
            t5_config.update(dict(d_model=int(config["d_model"]), d_ff=int(config["d_ff"]),
                                  num_heads=int(config["num_heads"]), d_kv=int(config["d_kv"]),
                                  num_layers=int(config["num_encoder_layers"]),
                                  num_decoder_layers=int(config["num_decoder_layers"]),
                                  dropout_rate=float(config["dropout"])))
            self.t5 = T5ForConditionalGeneration(t5_config)  # finetune.py:85
            self.t5.resize_token_embeddings(len(tokenizer))  # finetune.py:87
            self.t5.config.vocab_size = len(tokenizer)
            self.t5.config.use_cache = False  # finetune.py:145 (training); generate() below uses the cache

            # Our items -> the official token ids of their codes (row 0: padding item, all pad).
            item_tokens = list(dataset.field2id_token[dataset.iid_field])
            internal = {token: index for index, token in enumerate(item_tokens)}
            self.code_strings = {}
            for modality in MODALITIES:
                table = torch.zeros(len(item_tokens), self.n_levels // 2, dtype=torch.long)
                for index, token in enumerate(item_tokens[1:], start=1):
                    table[index] = torch.tensor(tokenizer.convert_tokens_to_ids(files[modality][token]))
                self.register_buffer(f"official_{modality}_ids", table, persistent=False)
                self.code_strings[modality] = {token: "".join(codes) for token, codes in files[modality].items()}
            self.prompt_ids = {}
            for task, prompt in self.soft_prompts.items():
                if task in ("seqrec", "seqimage"):
                    continue  # SeqRecDataset without add_prompt: no prompt (data.py:380)
                code = self.code_strings["text"][item_tokens[1]]
                ids = tokenizer(prompt + code)["input_ids"]
                suffix = self.official_text_ids[1].tolist() + [tokenizer.eos_token_id]
                if ids[-len(suffix):] != suffix:
                    raise ValueError(f"official tokenizer split {prompt + code!r} into {ids}: the prompt does not end "
                                     f"where the codes begin.")
                self.register_buffer(f"prompt_{task}", torch.tensor(ids[:-len(suffix)]), persistent=False)
                self.prompt_ids[task] = f"prompt_{task}"
            # Decoding: test_ddp_save.py:69-73 (trie of every code of the modality's index file) and ensemble.py:
            # 158-188 (a code names index2item_id[code], items in file order; the fusion takes its first).
            self.tries, self.index2id = {}, {}
            for modality in MODALITIES:
                all_items = {self.code_strings[modality][token] for token in files[modality]}
                self.tries[modality] = official.generation_trie.Trie(
                    [[0] + tokenizer.encode(candidate) for candidate in sorted(all_items)])
                index2id = {}
                for token, code in self.code_strings[modality].items():
                    if token in internal:
                        index2id.setdefault(code, []).append(internal[token])
                self.index2id[modality] = index2id
            # Model selection's decoding (selection_topk): the shared beam search over the official network, with
            # the official trie's codes as prefix tables. Level l's tokens: the distinct code tokens at level l of
            # the modality's file, sorted, after one token that carries the probability mass of every other
            # official token, so the search normalises over the whole official vocabulary, as HF's beam does.
            self.selection = {}
            for modality in MODALITIES:
                levels = list(zip(*files[modality].values()))
                names = [sorted(set(level)) for level in levels]
                index = [{name: code for code, name in enumerate(level)} for level in names]
                codes = torch.tensor([[index[level][name] for level, name in enumerate(item)]
                                      for item in files[modality].values()])
                columns = torch.tensor(tokenizer.convert_tokens_to_ids([n for level in names for n in level]))
                self.selection[modality] = types.SimpleNamespace(
                    vocab=SemanticIdVocab([len(level) for level in names], n_special=1), names=names,
                    catalogue=PrefixConstraints(codes, [len(level) for level in names],
                                                item_ids=torch.arange(len(codes))))
                self.register_buffer(f"selection_columns_{modality}", columns, persistent=False)
            self.official = official
            self.id_to_token = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            self.special_ids = set(tokenizer.all_special_ids)
            self._decode_checked = self._selection_checked = False
            self._check_layout(item_tokens)
            if self._pretrained_path:
                self._load_pretrained_t5(self._pretrained_path)

        # ---- pre-training checkpoint ------------------------------------------------------------------------
        def load_pretrained_backbone(self, path):
            self._pretrained_path = path  # loaded once the official network exists (__init__)

        def _load_pretrained_t5(self, path):
            """Fine-tuning from a pre-training run of this class: finetune.py --load_model_name (the T5 weights; the
            vocabulary is pretrain.py's in both runs)."""
            from recbole_genrec import safety

            state = safety.load_checkpoint(path, map_location="cpu")["state_dict"]
            weights = {key[len("t5."):]: value for key, value in state.items() if key.startswith("t5.")}
            if not weights:
                raise ValueError(f"pretrained_checkpoint {path} holds no official T5 weights (t5.*): pre-train with "
                                 f"this swapped class too.")
            self.t5.load_state_dict(weights)

        # ---- the official input layout ------------------------------------------------------------------------
        def official_ids(self, modality):
            return getattr(self, f"official_{modality}_ids")

        def encoder_ids(self, items, modality, task=None):
            """History items [B, T] (right-padded with 0) -> the Collator's input_ids [B, S]: (prompt) codes of the
            items, </s>, then 0."""
            tokens = self.official_ids(modality)[items].flatten(1)
            lengths = (items > 0).sum(1) * self.official_ids(modality).shape[1]
            tokens = torch.cat([tokens, tokens.new_zeros(len(items), 1)], dim=1)
            tokens[torch.arange(len(items), device=items.device), lengths] = self.tokenizer.eos_token_id
            if task is not None:
                prompt = getattr(self, self.prompt_ids[task])
                tokens = torch.cat([prompt.expand(len(items), -1), tokens], dim=1)
            return tokens

        def labels(self, items, modality):
            """Target items [N] -> the Collator's labels [N, L + 1]: codes, </s> (no padding: equal lengths)."""
            codes = self.official_ids(modality)[items]
            return torch.cat([codes, codes.new_full((len(items), 1), self.tokenizer.eos_token_id)], dim=1)

        @staticmethod
        def stack_padded(rows):
            """Inputs of several tasks -> one batch padded to the longest real input (padding='longest')."""
            width = max(int((row != 0).sum(1).max()) for row in rows)
            rows = [torch.nn.functional.pad(row, (0, max(0, width - row.shape[1])))[:, :width] for row in rows]
            input_ids = torch.cat(rows)
            return input_ids, (input_ids != 0).long()

        def _check_layout(self, item_tokens):
            """Our tensors against the official Collator on the official datasets' strings (data.py), once."""
            n = min(6, len(item_tokens) - 1)
            items = torch.arange(1, n + 1)
            history = torch.stack([torch.where(torch.arange(n) <= row, items, 0) for row in range(n)])
            collate = self.official.collator.Collator(types.SimpleNamespace(only_train_response=False), self.tokenizer)
            strings = {m: [self.code_strings[m][item_tokens[i]] for i in range(1, n + 1)] for m in MODALITIES}
            samples, ours_in, ours_out = [], [], []
            for modality in MODALITIES:  # SeqRecDataset: ''.join(history) -> next item
                samples += [{"input_ids": "".join(strings[modality][:row + 1]), "labels": strings[modality][row]}
                            for row in range(n)]
                ours_in.append(self.encoder_ids(history, modality))
                ours_out.append(self.labels(items, modality))
            for task, source, target in (("item2image", "text", "image"), ("image2item", "image", "text"),
                                         ("fusionseqrec", "text", "image")):
                if task in self.prompt_ids:
                    samples += [{"input_ids": self.soft_prompts[task] + "".join(strings[source][:row + 1]),
                                 "labels": strings[target][row]} for row in range(n)]
                    ours_in.append(self.encoder_ids(history, source, task))
                    ours_out.append(self.labels(items, target))
            batch = collate(samples)
            input_ids, mask = self.stack_padded(ours_in)
            same = (torch.equal(batch["input_ids"], input_ids) and torch.equal(batch["attention_mask"], mask)
                    and torch.equal(batch["labels"], torch.cat(ours_out)))
            if not same:
                raise AssertionError("the official Collator lays these samples out otherwise than the swap's glue")

        # ---- training -----------------------------------------------------------------------------------------
        def calculate_loss(self, interaction):
            items, _ = self.history(interaction)
            target = interaction[self.POS_ITEM_ID]
            users = len(items)
            inputs, labels = [], []
            for task, modality in (("seqrec", "text"), ("seqimage", "image")):
                if task in self.tasks:
                    inputs.append(self.encoder_ids(items, modality))
                    labels.append(self.labels(target, modality))
            if "fusionseqrec" in self.tasks:  # data.py:527-534, each sample's history in one modality
                text_in = (torch.rand(users, device=items.device) < 0.5).unsqueeze(1)
                text_input = self.encoder_ids(items, "text", "fusionseqrec")
                image_input = self.encoder_ids(items, "image", "fusionseqrec")
                inputs.append(torch.where(text_in, text_input, image_input))
                labels.append(torch.where(text_in, self.labels(target, "image"), self.labels(target, "text")))
            n_items = max(1, math.ceil(users * self.items_per_sequence))
            catalogue_items = torch.randint(1, self.n_items, (n_items, 1), device=items.device)
            for source, task in (("text", "item2image"), ("image", "image2item")):
                if task in self.tasks:  # ItemImageDataset: prompt + one modality's code -> the other's
                    other = "image" if source == "text" else "text"
                    inputs.append(self.encoder_ids(catalogue_items, source, task))
                    labels.append(self.labels(catalogue_items[:, 0], other))
            input_ids, attention_mask = self.stack_padded(inputs)
            return self.t5(input_ids=input_ids, attention_mask=attention_mask, labels=torch.cat(labels)).loss

        # ---- inference ----------------------------------------------------------------------------------------
        def official_generate(self, items, modality):
            """test_ddp_save.py:116-140 for one batch: (decoded strings [B * beam], sequence scores [B * beam])."""
            input_ids = self.encoder_ids(items, modality)
            width = int((input_ids != 0).sum(1).max())
            input_ids = input_ids[:, :width]
            output = self.t5.generate(
                input_ids=input_ids, attention_mask=(input_ids != 0).long(), max_new_tokens=10,
                prefix_allowed_tokens_fn=self.official.generation_trie.prefix_allowed_tokens_fn(self.tries[modality]),
                num_beams=self.beam_size, num_return_sequences=self.beam_size, output_scores=True,
                return_dict_in_generate=True, early_stopping=True, use_cache=True)
            sequences = output["sequences"].cpu().tolist()
            # tokenizer.batch_decode(skip_special_tokens=True) spends ~4 ms a sequence in the slow tokenizer (it
            # rebuilds its added-token set per call), hours per evaluation here; the trie only lets code tokens
            # through, whose decoding is their concatenation. The same strings as batch_decode's after
            # ensemble.get_sort_results' strip().replace(" ", ""), checked on the first batch.
            strings = ["".join(self.id_to_token[i] for i in row if i not in self.special_ids) for row in sequences]
            if not self._decode_checked:
                official = self.tokenizer.batch_decode(sequences[:4 * self.beam_size], skip_special_tokens=True)
                if [text.strip().replace(" ", "") for text in official] != strings[:4 * self.beam_size]:
                    raise AssertionError("the swap's decoding of generated codes differs from tokenizer.batch_decode")
                self._decode_checked = True
            return strings, output["sequences_scores"].float().cpu().tolist()

        def selection_generate(self, items, modality):
            """official_generate's strings and scores from the shared beam search over the official network: the
            same beams (exact search over the trie's codes, log-probabilities over the whole official vocabulary),
            each scored as HF's beam scores it, (sum of the code log-probs + log p(</s> | codes)) / (codes + 1),
            in HF's order. Checked against official_generate on the first batch of a run."""
            selection, t5 = self.selection[modality], self.t5
            columns = getattr(self, f"selection_columns_{modality}")  # our token t >= 1 -> official columns[t - 1]
            input_ids = self.encoder_ids(items, modality)
            input_ids = input_ids[:, :int((input_ids != 0).sum(1).max())]
            mask = (input_ids != 0).long()
            memory = t5.encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state

            def step(tokens, state):
                official_tokens = torch.where(tokens > 0, columns[(tokens - 1).clamp(min=0)], 0)  # 0: decoder start
                output = t5(encoder_outputs=(state.memory,), attention_mask=state.mask,
                            decoder_input_ids=official_tokens[:, None], past_key_values=state.past, use_cache=True)
                logits = output.logits[:, -1].float()
                rest = logits.index_fill(1, columns, float("-inf")).logsumexp(1, keepdim=True)
                return torch.cat([rest, logits[:, columns]], 1), _DecoderState(state.memory, state.mask,
                                                                              output.past_key_values)

            found = beam_search(step, _DecoderState(memory, mask, None), len(items), selection.vocab.num_levels,
                                selection.vocab, self.beam_size, constraints=selection.catalogue,
                                state_rows_per_user=1, start_token=0, device=items.device)
            codes = found.codes.clamp(min=0)  # dead beams (fewer codes than the beam): scored -inf below
            tokens = columns[selection.vocab.to_tokens(codes) - 1].flatten(0, 1)  # [B * beam, L] official ids
            rows = torch.arange(len(items), device=items.device).repeat_interleave(self.beam_size)
            hidden = t5.decoder(input_ids=torch.cat([tokens.new_zeros(len(tokens), 1), tokens], 1),
                                encoder_hidden_states=memory[rows], encoder_attention_mask=mask[rows]).last_hidden_state
            hidden = hidden[:, -1]
            if t5.config.tie_word_embeddings:  # T5ForConditionalGeneration.forward's scaling before lm_head
                hidden = hidden * (t5.model_dim ** -0.5)
            eos = t5.lm_head(hidden).float().log_softmax(-1)[:, self.tokenizer.eos_token_id]
            scores = (found.scores + eos.view_as(found.scores)) / (selection.vocab.num_levels + 1)
            scores, order = scores.sort(dim=1, descending=True, stable=True)
            codes = codes.gather(1, order.unsqueeze(-1).expand_as(codes)).tolist()
            strings = ["".join(selection.names[level][code] for level, code in enumerate(beam))
                       for user in codes for beam in user]
            return strings, scores.flatten().cpu().tolist()

        def selection_topk(self, interaction, k):
            """Model selection's ranking: the official fusion of selection_generate's beams (the official beams and
            scores, minutes per validation instead of HF generate's hours at this vocabulary); the test split ranks
            with official_generate."""
            if not self._selection_checked:
                self._check_selection(interaction)
            return self.generate_topk(interaction, k, generate=self.selection_generate)

        def _check_selection(self, interaction):
            items, _ = self.history(interaction)
            items = items[:8]
            for modality in MODALITIES:
                official, official_scores = self.official_generate(items, modality)
                ours, scores = self.selection_generate(items, modality)
                if ours != official or max(abs(a - b) for a, b in zip(scores, official_scores)) > 1e-4:
                    raise AssertionError(f"selection_generate's {modality} beams differ from official_generate's on "
                                         f"the first validation users")
            self._selection_checked = True

        def generate_topk(self, interaction, k, generate=None):
            generate = generate or self.official_generate
            items, _ = self.history(interaction)
            users = list(range(len(items)))
            stand_ins = [[_StandIn()] for _ in users]
            infos = {}
            for modality in MODALITIES:
                strings, scores = generate(items, modality)
                infos[modality] = self.official.ensemble.get_sort_results(
                    strings, scores, stand_ins, users, self.beam_size, self.index2id[modality])
            self.official.ensemble.get_topk_results_ensemble(infos["text"], infos["image"])
            ranked = torch.full((len(items), k), -1, dtype=torch.long)
            for row, (stand_in,) in enumerate(stand_ins):
                order = [int(item) for item in stand_in.seen if item != -1][:k]
                ranked[row, :len(order)] = torch.tensor(order, dtype=torch.long)
            # The fusion exposes its order, not its scores: the rank stands for the score (the trainer reads items).
            scores = -torch.arange(k, dtype=torch.float).expand(len(items), -1).clone()
            return ranked.to(items.device), scores.masked_fill(ranked < 0, float("-inf")).to(items.device)

    # Checkpoints name the model class; the plugin's allow-list loads classes of its model modules.
    OfficialModuleMQL4GRec.__module__ = mql4grec_module.__name__
    OfficialModuleMQL4GRec.__qualname__ = OfficialModuleMQL4GRec.__name__
    mql4grec_module.OfficialModuleMQL4GRec = OfficialModuleMQL4GRec
    return OfficialModuleMQL4GRec
