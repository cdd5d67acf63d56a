r"""RPG's official model module (facebookresearch/RPG_KDD2025) trained and evaluated by our pipeline.

What runs official code, imported from the checkout at run time (nothing of it is copied here):
- the network: `genrec/models/RPG/model.py` `RPG` as its constructor builds it: HF `GPT2Model` (wte = the code
  tokens, padding token 0 and EOS, wpe = `max_item_seq_len` positions) from a `GPT2Config` of this run's widths and
  dropouts, with the official `config.yaml`'s `activation_function` (gelu_new), `layer_norm_epsilon` (1e-12) and
  `initializer_range` (0.02); one `ResBlock` prediction head per digit; HF's GPT-2 initialisation (normal 0.02, the
  `c_proj` weights 0.02 / sqrt(2 n_layer)) and the heads' zero weights. An item's input is the mean of its digit
  token embeddings (`forward`).
- the loss: `RPG.forward(batch)`'s: per digit, cosine(head state, that digit's token embeddings) / `temperature`,
  cross-entropy over the positions whose label is not -100, mean over digits.
- the decoding: `RPG.generate(batch, n_return_sequences=k)`: exact scoring of every item (mean over digits of the
  per-digit log-softmax) for validation, as the official trainer validates, and for the test either the same
  (`rpg_inference: exact`) or graph-constrained decoding (`rpg_inference: graph`: `generate_w_decoding_graph =
  True`, as `genrec/pipeline.py` sets it for the test): the official item graph (`init_graph`: `build_ii_sim_mat`
  on the learned token embeddings, `build_adjacency_list`) and `graph_propagation` (random start items drawn from
  torch's global generator, `propagation_steps` expansions, top `num_beams` kept).
- the tokens of our codes: the official `RPGTokenizer._sem_ids_to_tokens` (digit d's code c -> token
  c + d * codebook_size + 1) and `RPG._map_item_tokens` (item id -> its tokens, row 0 all padding tokens).
- the input layout is checked once per model against the official tokenizer's `_tokenize_first_n_items` /
  `_tokenize_later_items` on the same item sequences (see `check_layout`).
What stays ours: RecBole's split and loaders; the OPQ codes (our tokenizer: MiniLM text vectors, our OPQ fit);
which rows a batch holds and where their labels sit (`RPG.prepare_training_split` / `loss_positions`: each user's
sequence once with the loss at every position, then full windows scored at the last position: the same (history,
target) terms as the official `tokenize_function`, batched by RecBole's shuffled rows); the trainer (AdamW, warm-up
+ cosine, clipping, validation NDCG@10 selection); the graph's `chunk_size` (our `graph_chunk_size`: a memory knob);
the metrics (RecBole's, on items).

Glue, not official: the official constructor wants its config dict, an `AbstractDataset` and a tokenizer. The config
is the official `default.yaml` + `models/RPG/config.yaml` (yaml.safe_load; the float strings read as
`convert_config_dict` reads them) overridden by this run's widths; the dataset is the official `AbstractDataset`
with an item map of our ids (official item id = our RecBole item id); the tokenizer is an `RPGTokenizer` with its
attributes set as its `__init__` sets them, the codes being ours instead of a faiss file. `item_id2tokens` is made a
non-persistent buffer (it then follows `model.to(device)`). `genrec/dataset.py` imports `datasets.Dataset`, used only
by the official data split, which is not run: where HF `datasets` is not installed (the official-code environment
has none; installing it there would move huggingface_hub / fsspec under transformers 4.39.3), a stand-in module is in
`sys.modules` while genrec/dataset.py alone is imported. The official tokenizer's `log` (genrec/utils.py, which needs
accelerate and tiktoken; init_graph calls it) is replaced by this package's logger on the stand-in tokenizer.

The parity settings (benchmarks/peers.py SETTINGS["RPG"]) test with `rpg_inference: exact`, so a parity row runs the
official exact scoring for validation and test; the official graph decoding runs with `rpg_inference: graph`.

Cost: at the --quick widths on ml-100k (d_model 32, 1 layer, 4 x 16 codes, 89,627 training rows, 351 steps of 256),
one thread of a shared CPU: 10.3 s an epoch (29 ms a step) against ours 7.4 s (21 ms); the official forward runs the
m heads at every position of the batch before selecting the labelled ones.

Used by benchmarks/official_parity.py (see its interface); `swapped_class(checkout)` returns the class.
"""
import importlib
import importlib.util
import logging
import os
import sys
import types

OFFICIAL_REPO = "facebookresearch/RPG_KDD2025"
OFFICIAL_COMMIT = "a7463a2e694ce501ee9d9cffbc417f86640f5269"
PARTS = ("Official (imported from the checkout): the network, genrec/models/RPG/model.py RPG (HF GPT2Model built "
         "from a GPT2Config of this run's widths and dropouts with the official config.yaml's gelu_new, "
         "layer_norm_epsilon 1e-12 and initializer_range 0.02, HF's GPT-2 initialisation, one zero-initialised "
         "ResBlock head per digit, item input = mean of its digit token embeddings); its loss (RPG.forward: per-digit "
         "cosine logits / temperature, cross-entropy over the labelled positions, mean over digits); its decoding "
         "(RPG.generate: exact scoring of every item for validation and for rpg_inference: exact, and for "
         "rpg_inference: graph the official item graph init_graph / build_ii_sim_mat / build_adjacency_list on the "
         "learned token embeddings and graph_propagation with its random start items); the code -> token map "
         "(RPGTokenizer._sem_ids_to_tokens, RPG._map_item_tokens), and the input layout is checked against "
         "RPGTokenizer._tokenize_first_n_items / _tokenize_later_items. Ours: RecBole's split and loaders, the OPQ "
         "codes (our tokenizer), the training rows and label positions (each user's sequence once with the loss at "
         "every position plus full windows at the last position: the official tokenize_function's loss terms, in "
         "RecBole's shuffled batches), the trainer (AdamW, warm-up + cosine, clipping, selection on validation "
         "NDCG@10), the graph-building chunk size, and RecBole's metrics. The parity settings test with rpg_inference: "
         "exact (official exact scoring); the official graph is built and walked only under rpg_inference: graph. "
         "Glue: the official constructor's config (default.yaml + RPG/config.yaml overridden by this run's "
         "widths), dataset (AbstractDataset with our item ids) and tokenizer (RPGTokenizer with our codes) "
         "stand-ins.")
SETTINGS = {}

logger = logging.getLogger("recbole_genrec")
_MISSING = object()


def _datasets_stand_in():
    """A module `datasets` whose `Dataset` refuses use: genrec/dataset.py imports it for the official data split,
    which the swap never runs."""
    module = types.ModuleType("datasets")

    class Dataset:
        @classmethod
        def from_dict(cls, *args, **kwargs):
            raise RuntimeError("HF datasets is not installed: the official data pipeline does not run in the swap")

    module.Dataset = Dataset
    module.__file__ = __file__ + "#datasets-stand-in"
    return module


def _import_official(checkout):
    """The official modules genrec.models.RPG.model, genrec.models.RPG.tokenizer and genrec.dataset, from
    `checkout`."""
    checkout = os.path.abspath(checkout)
    if not os.path.isfile(os.path.join(checkout, "genrec", "models", "RPG", "model.py")):
        raise FileNotFoundError(f"{checkout} is not a checkout of {OFFICIAL_REPO} (no genrec/models/RPG/model.py)")
    loaded = sys.modules.get("genrec")
    if loaded is not None and not any(os.path.abspath(p).startswith(checkout) for p in getattr(loaded, "__path__", [])):
        raise ImportError(f"another package named 'genrec' is already imported ({loaded}); run in a fresh process")
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    stand_in = importlib.util.find_spec("datasets") is None and "genrec.dataset" not in sys.modules
    saved = sys.modules.get("datasets", _MISSING)
    if stand_in:
        sys.modules["datasets"] = _datasets_stand_in()
    try:  # genrec/dataset.py alone imports `datasets`; nothing else is imported while the stand-in is there
        dataset = importlib.import_module("genrec.dataset")
    finally:
        if stand_in:
            if saved is _MISSING:
                sys.modules.pop("datasets", None)
            else:
                sys.modules["datasets"] = saved
    model = importlib.import_module("genrec.models.RPG.model")
    tokenizer = importlib.import_module("genrec.models.RPG.tokenizer")
    for module in (dataset, model, tokenizer):
        if not os.path.abspath(module.__file__).startswith(checkout):
            raise ImportError(f"{module.__name__} imported from {module.__file__}, not from {checkout}")
    return types.SimpleNamespace(dataset=dataset, model=model, tokenizer=tokenizer, checkout=checkout)


def official_base_config(checkout):
    """The official defaults, as genrec/utils.py get_config merges them for `--model=RPG` (default.yaml, then
    models/RPG/config.yaml; no dataset file: the AmazonReviews2014 one holds only the category and split). The
    official `convert_config_dict` eval()s every string value: '1e-12' is then a float; the keys the network reads
    are converted here."""
    import yaml

    config = {}
    for path in (("genrec", "default.yaml"), ("genrec", "models", "RPG", "config.yaml")):
        with open(os.path.join(checkout, *path), encoding="utf-8") as handle:
            config.update(yaml.safe_load(handle) or {})
    for key in ("layer_norm_epsilon", "initializer_range", "temperature"):
        config[key] = float(config[key])
    return config


def swapped_class(checkout):
    """Our RPG (OPQ codes, training rows, trainer hooks) with the official network, loss and decoding."""
    import torch

    from recbole_genrec.model import rpg as rpg_module
    from recbole_genrec.model.rpg import RPG

    official = _import_official(checkout)
    base_config = official_base_config(official.checkout)

    class OfficialModuleRPG(RPG):
        official_checkout = official.checkout

        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            # Ours is replaced by the official module: the code table, the decoder, the heads.
            for name in ("digit_embedding", "backbone", "heads", "digit_offsets"):
                delattr(self, name)
            n_items = self.item_codes.shape[0]  # our ids 1..N plus the padding item 0
            if n_items != self.n_items:
                raise ValueError(f"item_codes has {n_items} rows, the dataset {self.n_items} items")
            run = {
                "device": config["device"], "accelerator": None,
                "n_embd": int(config["d_model"]), "n_layer": int(config["num_layers"]),
                "n_head": int(config["num_heads"]), "n_inner": int(config["d_ff"]),
                "embd_pdrop": float(config["embd_dropout"]), "attn_pdrop": float(config["attn_dropout"]),
                "resid_pdrop": float(config["resid_dropout"]), "temperature": self.temperature,
                "n_codebook": self.n_digits, "codebook_size": self.codebook_size,
                "max_item_seq_len": self.max_seq_length,
                "num_beams": self.num_beams, "n_edges": self.num_edges, "propagation_steps": self.propagation_steps,
                "chunk_size": self.graph_chunk_size,
            }
            official_config = {**base_config, **run}
            self.official_config = official_config
            # The official AbstractDataset, its item map = our ids (official id i = our item i).
            stand_in_dataset = official.dataset.AbstractDataset(official_config)
            items = list(range(1, n_items))
            stand_in_dataset.id_mapping["item2id"].update({item: item for item in items})
            stand_in_dataset.id_mapping["id2item"].extend(items)
            # The official RPGTokenizer, its attributes set as its __init__ sets them, our codes as the semantic IDs.
            tokenizer_class = official.tokenizer.RPGTokenizer
            tokenizer = tokenizer_class.__new__(tokenizer_class)
            tokenizer.n_codebook_bits = tokenizer._get_codebook_bits(official_config["codebook_size"])
            tokenizer.index_factory = (f"OPQ{official_config['n_codebook']},IVF1,"
                                       f"PQ{official_config['n_codebook']}x{tokenizer.n_codebook_bits}")
            official.tokenizer.AbstractTokenizer.__init__(tokenizer, official_config, stand_in_dataset)
            tokenizer.item2id = stand_in_dataset.item2id
            tokenizer.user2id = stand_in_dataset.user2id
            tokenizer.id2item = stand_in_dataset.id_mapping["id2item"]
            codes = self.item_codes.cpu().tolist()
            tokenizer.item2tokens = tokenizer._sem_ids_to_tokens({item: tuple(codes[item]) for item in items})
            tokenizer.eos_token = tokenizer.n_digit * tokenizer.codebook_size + 1
            tokenizer.ignored_label = -100
            tokenizer.log = lambda message, level="info": logger.log(logging.getLevelName(level.upper()), message)
            self.official_tokenizer = tokenizer
            self.official = official.model.RPG(official_config, stand_in_dataset, tokenizer)
            # A plain tensor attribute in the official module: made a (non-saved) buffer, so it follows .to(device).
            item_tokens = self.official.item_id2tokens
            del self.official.item_id2tokens
            self.official.register_buffer("item_id2tokens", item_tokens, persistent=False)
            expected = self.item_codes + torch.arange(self.n_digits, device=self.item_codes.device) * \
                self.codebook_size + 1
            expected[0] = 0
            if not torch.equal(item_tokens.cpu(), expected.cpu()):
                raise ValueError("the official item -> token map differs from our codes")
            self._graph_key_official = None
            self._layout_checked = False

        # ---- our interaction -> the official batch -----------------------------------------------------------
        def official_batch(self, interaction, with_labels=False):
            """The official batch layout (genrec/models/RPG/tokenizer.py): `input_ids` [B, T] item ids right-padded
            with 0, `attention_mask`, `seq_lens`, and in training `labels` [B, T]: the next item at every position
            that carries a loss (ours, `loss_positions`), -100 elsewhere."""
            items, lengths = self.history(interaction)
            batch = {"input_ids": items, "attention_mask": (items != 0).long(), "seq_lens": lengths}
            if with_labels:
                target = interaction[self.POS_ITEM_ID]
                if self.all_positions:
                    scored, labels = self.loss_positions(items, lengths, target)
                else:  # one target per RecBole row, at the last position
                    positions = torch.arange(items.shape[1], device=items.device)
                    scored = positions[None, :] == (lengths - 1)[:, None]
                    labels = target[:, None].expand_as(items)
                batch["labels"] = labels.masked_fill(~scored, -100)
            return batch

        def check_layout(self, interaction):
            """Raises unless `official_batch` equals, row by row, what the official tokenizer makes of the same
            item sequence (history + target): `_tokenize_first_n_items` for a row shorter than the history width
            (a user's sequence from its start, the loss at every position), `_tokenize_later_items` for a full
            window (the loss at its last position)."""
            if not self.all_positions:
                return
            batch = self.official_batch(interaction, with_labels=True)
            items, lengths = self.history(interaction)
            target = interaction[self.POS_ITEM_ID]
            width = items.shape[1]
            for row in range(len(items)):
                length = int(lengths[row])
                sequence = items[row, :length].tolist() + [int(target[row])]
                if length < width:
                    expected = self.official_tokenizer._tokenize_first_n_items(sequence)
                else:
                    expected = self.official_tokenizer._tokenize_later_items(sequence)
                ours = (batch["input_ids"][row].tolist(), batch["attention_mask"][row].tolist(),
                        batch["labels"][row].tolist(), int(batch["seq_lens"][row]))
                if ours != tuple(expected):
                    raise ValueError(f"row {row}: our batch {ours} differs from the official layout {expected}")

        # ---- training: the official loss ---------------------------------------------------------------------
        def calculate_loss(self, interaction):
            if not self._layout_checked:
                self.check_layout(interaction)
                self._layout_checked = True
            return self.official(self.official_batch(interaction, with_labels=True)).loss

        # ---- ranking: the official generate ------------------------------------------------------------------
        def official_generate(self, interaction, k, graph):
            """official RPG.generate -> (items [B, k], rank scores). `graph`: generate_w_decoding_graph (the
            official graph is rebuilt, as init_graph, whenever the token embeddings changed since it was built)."""
            module = self.official
            if graph:
                weight = module.gpt2.wte.weight
                key = (weight.data_ptr(), weight._version, weight.device)
                if key != self._graph_key_official:
                    module.init_flag = False
                    self._graph_key_official = key
            module.generate_w_decoding_graph = bool(graph)
            try:
                with torch.no_grad():
                    output = module.generate(self.official_batch(interaction), n_return_sequences=k)
            finally:
                module.generate_w_decoding_graph = False
            if graph:
                output = output[0]  # (items, visited counts)
            items = output.squeeze(-1).long()
            scores = -torch.arange(k, dtype=torch.float32, device=items.device).expand(len(items), k).clone()
            return items, scores

        def selection_topk(self, interaction, k):
            """Validation ranks as the official trainer validates: generate without the graph (exact)."""
            return self.official_generate(interaction, k, graph=False)

        def generate_topk(self, interaction, k):
            if self.inference not in ("graph", "exact"):
                raise ValueError(f"rpg_inference {self.inference!r}")
            return self.official_generate(interaction, k, graph=self.inference == "graph")

        def full_sort_predict(self, interaction):
            raise NotImplementedError("the official RPG module ranks through generate (selection_topk, "
                                      "generate_topk); it exposes no per-item score table")

        def predict(self, interaction):
            raise NotImplementedError("the official RPG module ranks through generate")

    # Checkpoints pickle the model class by reference and load through the plugin's allow-list of model modules:
    # the class lives in recbole_genrec.model.rpg for this process (as benchmarks/peer_module_swap.py does).
    OfficialModuleRPG.__module__ = rpg_module.__name__
    OfficialModuleRPG.__qualname__ = OfficialModuleRPG.__name__
    rpg_module.OfficialModuleRPG = OfficialModuleRPG
    return OfficialModuleRPG
