"""ColaRec's official model module (Junewang0614/ColaRec) trained and evaluated inside recbole_genrec's pipeline.

`swapped_class(checkout)` returns a subclass of our `recbole_genrec.model.colarec.ColaRec` whose network is the
official `V4T5smallModel` (src/models.py: a T5 encoder-decoder built from HF `T5Stack`s, the task-token table
`prompt`, the item-ID table `atomid_embed`, the user-ID table `atomid_user_embed`, one code-embedding table per
decoder position `cid_embed_list` and one head per level `centroids`), configured through the official
`CIDT5RecConfig.from_pretrained(folder, new_dict=...)` (model_train.py:64-73) on a T5 config of the run's widths
written to a temporary folder (no t5-small weights: `save_load_ckpt` is not called, the official `post_init`
initialisation stands). The per-batch inputs are built by the official tokenizer's layout code
(src/tokenization.py `V4T5Tokenizer.__call__/encode/padding/batch_encode`) and the official collate functions
(src/datasets.py `v7CL2TrainDataset.collate_fn`, `BasedValidDataset.collate_fn`), fed with our tensors; the losses
are the official ones (`forward_train` cross-entropies, `get_encoder_state`, other/new_utils.py `get_lastpos_state`,
`compute_bpr_loss` with the module's `BPRLoss`), combined as model_train.py:101-131 does; decoding is the official
`predict` (HF `generate` beam search constrained by other/new_utils.py `PrefixTree`) and the official
post-processing (other/evaluation.py `output_preprocess`, `get_cid_dict`, `decode_cid2atomid`,
`cut_intered_prediction`), as src/evaluation.py:217-225.

Stays ours: RecBole's split, sequential training rows (history = the items before the target) and loaders, the
plugin trainer (optimiser, schedule, validation NDCG@10 per epoch, best checkpoint) and metrics; the GIDs
(LightGCN + HKMeans); each item's content (one token: our projected MiniLM text vector, as our random-init path,
since the official word pieces need the t5-small tokenizer and weights); the history sample (`user_items`) and the
negative sampler (`sample_negatives`); the beam width (`beam_size`) and the history read at evaluation
(MAX_ITEM_LIST_LENGTH).

Needs transformers 4.39.x (the official pins 4.30.2; LIGER's env 4.39.3): the official `forward` reads tuple
`past_key_values`. Not part of the plugin: a diagnostic of benchmarks/official_parity.py.
"""
import importlib
import os
import sys
import tempfile

OFFICIAL_REPO = "Junewang0614/ColaRec"
OFFICIAL_COMMIT = "91375762830dad060e2cdd441cde4434c7d2d0d3"
PARTS = (
    "Official code runs the network (src/models.py V4T5smallModel: HF T5Stack encoder and decoder, task-token, "
    "item-ID and user-ID tables, per-level code embeddings cid_embed_list and 33-way heads centroids, built through "
    "CIDT5RecConfig.from_pretrained on a T5 config of the run's widths, official post_init initialisation, no "
    "t5-small weights), the input layout (src/tokenization.py V4T5Tokenizer encode/padding and src/datasets.py "
    "collate_fn of v7CL2TrainDataset / BasedValidDataset, fed our item ids), the losses (forward_train "
    "cross-entropies for user->GID and item->GID of the positive and the negative, get_encoder_state of the "
    "contrastive positive with its sampled user-ID slot, get_lastpos_state + compute_bpr_loss with the module's "
    "BPRLoss, combined 0.08 x generation + BPR + 0.1 x contrastive as model_train.py) and the decoding (predict: HF "
    "generate beam search with the official PrefixTree constraint, then output_preprocess / decode_cid2atomid / "
    "cut_intered_prediction). Ours: RecBole's split and sequential training rows, loaders, trainer, schedule and "
    "metrics; the GIDs (LightGCN + HKMeans); each item's content as one token (our projected MiniLM vector, in place "
    "of the t5-small word pieces the official reads through its shared embedding); the history sample and the "
    "negative sampler; the beam width (beam_size) and the evaluated history (MAX_ITEM_LIST_LENGTH).")
SETTINGS = {}

# The official loss weights: model_train.py:30-31 argparse defaults (`--generate_lamda` 0.08, `--content_cl_lamda`
# 0.1, the values command.sh and the README run; they override other/configs.py's 0.05 through
# `train_config.update(args.__dict__)`, model_train.py:43).
GENERATE_LAMDA = 0.08
CONTENT_CL_LAMDA = 0.1

# Token ids of the official layout in a vocabulary of our own: T5's PAD (0, also the decoder start) and EOS (1),
# the official `atom_pad` (<extra_id_0>) and `atom_user_pad` (<extra_id_1>) placeholders, then item i's one content
# token at CONTENT_OFFSET + i.
PAD, EOS, ATOM_PAD, ATOM_USER_PAD = 0, 1, 2, 3
CONTENT_OFFSET = 4


def _import_official(checkout):
    """The official modules, imported from `checkout` (its top-level packages are `src` and `other`)."""
    checkout = os.path.abspath(checkout)
    for name in [m for m in sys.modules if m in ("src", "other") or m.startswith(("src.", "other."))]:
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if not os.path.abspath(module_file).startswith(checkout):
            raise ImportError(f"a module {name!r} from {module_file} shadows ColaRec's official package of the same "
                              f"name under {checkout}")
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    names = ("src.models", "src.tokenization", "src.datasets", "other.new_utils", "other.evaluation",
             "other.config_class")
    return {name.split(".")[-1]: importlib.import_module(name) for name in names}


def swapped_class(checkout: str) -> type:
    import torch
    from torch import nn

    from recbole_genrec.model import colarec as colarec_module
    from recbole_genrec.model.colarec import ColaRec
    from recbole_genrec.representation.collaborative import training_interactions

    official = _import_official(checkout)
    models, tokenization, datasets = official["models"], official["tokenization"], official["datasets"]
    new_utils, evaluation, config_class = official["new_utils"], official["evaluation"], official["config_class"]

    class LayoutTokenizer:
        """The official V4T5Tokenizer's layout code (its methods, taken from the class) over our items: each item's
        "text" is its id and tokenizes to its one content token. No sentencepiece model is involved."""
        _methods = vars(tokenization.V4T5Tokenizer)  # vars: T5Tokenizer may be transformers' dummy class
        __call__ = _methods["__call__"]
        encode = _methods["encode"]
        padding = _methods["padding"]
        batch_encode = _methods["batch_encode"]
        pad_token_id, eos_token_id = PAD, EOS
        atom_pad, atom_pad_id = "<extra_id_0>", ATOM_PAD
        atom_user_pad, atom_user_pad_id = "<extra_id_1>", ATOM_USER_PAD

        def __init__(self, process_config):
            self.config = process_config

        @staticmethod
        def tokenize(item):
            return [CONTENT_OFFSET + int(item)]

        @staticmethod
        def convert_tokens_to_ids(tokens):
            return tokens

    class ContentTokens(nn.Module):
        """Stands in the official `shared` word embedding: the special tokens keep the official table (PAD, EOS and
        the two placeholders, which the official forward overwrites with ID embeddings), an item's content token is
        our projected text vector (our random-init ColaRec's item content)."""

        def __init__(self, words, projection, item_text):
            super().__init__()
            self.words = words
            self.projection = projection
            self.register_buffer("item_text", item_text, persistent=False)

        def forward(self, ids):
            special = ids < CONTENT_OFFSET
            words = self.words(ids.clamp(max=CONTENT_OFFSET - 1))
            content = self.projection(self.item_text[(ids - CONTENT_OFFSET).clamp(min=0)]).to(words.dtype)
            return torch.where(special.unsqueeze(-1), words, content)

    class OfficialColaRec(ColaRec):
        """Our ColaRec's data side (GIDs, history, negatives, catalogue) around the official V4T5smallModel."""

        def __init__(self, config, dataset):
            if config["pretrained_t5_path"]:
                raise ValueError("The official-module swap of ColaRec builds a randomly initialised T5 (no t5-small "
                                 "weights, no word pieces): leave pretrained_t5_path empty.")
            super().__init__(config, dataset)
            # ours replaced by the official module
            for name in ("backbone", "task_embedding", "item_id_embedding", "code_embeddings", "code_heads",
                         "user_id_embedding"):
                if hasattr(self, name):
                    delattr(self, name)
            projection, item_text = self.content_projection, self.item_text
            del self.content_projection, self.item_text
            if self.content_length.max() != 1:
                raise ValueError("expected one content token per item (the random-init path)")

            levels = self.n_levels
            cid_token_num = max(self.vocab_sizes)
            self.process_config = config_class.DataProcessConfig(mode="latest", sample_user_num=1,
                                                                 seq_type="short")
            self.process_config.updata_for_type()  # max_item_num 20, max_token_num 256, max_infor_len 30
            self.process_config.max_token_num = self.max_encoder_tokens
            self.process_config.max_infor_len = int(config["max_text_tokens"])
            self.process_config.sample_item_num = self.sampled_items
            # model_train.py:64-73: the official config from a T5 folder plus con_dict
            con_dict = dict(item_num=self.n_items - 1, user_num=dataset.user_num - 1, cid_token_num=cid_token_num,
                            code_num=levels, code_length=levels, max_info_len=self.process_config.max_infor_len,
                            item_position=False)
            t5 = models.T5Config(  # t5-small's config.json but for the widths (no weights are read)
                vocab_size=CONTENT_OFFSET, d_model=int(config["d_model"]), d_kv=int(config["d_kv"]),
                d_ff=int(config["d_ff"]), num_layers=int(config["num_encoder_layers"]),
                num_decoder_layers=int(config["num_decoder_layers"]), num_heads=int(config["num_heads"]),
                relative_attention_num_buckets=32, relative_attention_max_distance=128,
                dropout_rate=float(config["dropout"]), layer_norm_epsilon=1e-6, initializer_factor=1.0,
                feed_forward_proj="relu", is_encoder_decoder=True, use_cache=True, pad_token_id=PAD,
                eos_token_id=EOS, decoder_start_token_id=PAD, n_positions=512)
            with tempfile.TemporaryDirectory() as folder:
                t5.save_pretrained(folder)
                official_config = models.CIDT5RecConfig.from_pretrained(folder, new_dict=con_dict)
            self.official = models.V4T5smallModel(official_config)
            self.official.shared = ContentTokens(self.official.shared, projection, item_text)

            self.train_collator = object.__new__(datasets.v7CL2TrainDataset)
            self.valid_collator = object.__new__(datasets.BasedValidDataset)
            self.train_collator.tokenizer = self.valid_collator.tokenizer = LayoutTokenizer(self.process_config)
            # the official item corpus's `cid` (1-based codes) for decoding, and its prefix tree (model_eval.py:75-78)
            cids = (self.item_codes[1:] + 1).tolist()
            self.cid2atom = evaluation.get_cid_dict({str(item): {"cid": cid} for item, cid in enumerate(cids, 1)})
            self.prefix_tree = new_utils.PrefixTree()
            for cid in cids:
                self.prefix_tree.set([PAD] + cid)
            self.unknown_id = self.n_items  # pro_config.unknown_id = total_item_num + 1
            # each item's training users (the official item_seq, get_item_interlist): the contrastive positive's
            # user-ID slot is one of them (datasets.py:201-203)
            pairs = training_interactions(dataset)
            users, items = pairs[dataset.uid_field], pairs[dataset.iid_field]
            order = torch.argsort(items, stable=True)
            counts = torch.bincount(items, minlength=self.n_items)
            self.register_buffer("item_users", users[order], persistent=False)
            self.register_buffer("item_user_start", torch.cumsum(counts, 0) - counts, persistent=False)
            self.register_buffer("item_user_count", counts, persistent=False)

        # ---- sampling (the official __getitem__ of v7CL2TrainDataset, on our tensors) ---------------------------
        def contrastive_positives(self, positive):
            """Another item of the positive's leaf cluster (the official `cid_neg_dict[iid]['sec']`, which leaves
            the item out: datasets.py:175-178 falls back to the item itself when the set is empty)."""
            size = self.leaf_size[positive]
            draw = (torch.rand(positive.shape, device=positive.device) * (size - 1).clamp(min=1)).long()
            other = self.leaf_order[self.leaf_start[positive] + draw]
            last = self.leaf_order[self.leaf_start[positive] + size - 1]
            other = torch.where(other == positive, last, other)  # uniform over the others
            return torch.where(size > 1, other, positive)

        def item_user(self, items):
            """One training user of each item, 0 (the official `[0]`) for an item without any."""
            count = self.item_user_count[items]
            draw = (torch.rand(items.shape, device=items.device) * count.clamp(min=1)).long()
            user = self.item_users[(self.item_user_start[items] + draw).clamp(max=len(self.item_users) - 1)]
            return torch.where(count > 0, user, torch.zeros_like(user))

        def _to_device(self, tensors):
            device = self.item_codes.device
            return {key: value.to(device) for key, value in tensors.items()}

        def calculate_loss(self, interaction):
            positive = interaction[self.POS_ITEM_ID]
            aug = self.contrastive_positives(positive)
            negative = self.sample_negatives(interaction[self.USER_ID], positive)  # outside history and leaf
            aug_user = self.item_user(aug)
            history = self.user_items(interaction).tolist()  # up to sample_item_num items, random order
            labels = (self.item_codes[positive] + 1).tolist()  # official 1-based cid
            neg_labels = (self.item_codes[negative] + 1).tolist()
            batch = [{
                "item_content": [p], "item_atomid": [p], "neg_item_content": [n], "neg_item_atomid": [n],
                "aug_item_content": [a], "aug_item_atomid": [a], "aug_item_user_atomids": [u],
                "user_content": [i for i in row if i], "user_atomid_list": [i for i in row if i],
                "label_item": label, "neg_label_item": neg_label,
            } for p, n, a, u, row, label, neg_label in zip(positive.tolist(), negative.tolist(), aug.tolist(),
                                                           aug_user.tolist(), history, labels, neg_labels)]
            user_input_dict, pos_input_dict, neg_input_dict, labels, neg_labels, aug_input_dict = (
                self._to_device(part) for part in self.train_collator.collate_fn(batch))
            model = self.official
            # model_train.py:103-131
            pos_index_output = model.forward_train(**pos_input_dict, **labels, ty="item")
            neg_index_output = model.forward_train(**neg_input_dict, **neg_labels, ty="item")
            index_loss = pos_index_output.loss + neg_index_output.loss
            retrieval_output = model.forward_train(**user_input_dict, **labels, ty="user")
            generative_loss = index_loss + retrieval_output.loss
            neg_hidden_state = new_utils.get_lastpos_state(neg_index_output.encoder_last_hidden_state,
                                                           neg_input_dict["attention_mask"])
            pos_hidden_state = new_utils.get_lastpos_state(pos_index_output.encoder_last_hidden_state,
                                                           pos_input_dict["attention_mask"])
            user_hidden_state = new_utils.get_lastpos_state(retrieval_output.encoder_last_hidden_state,
                                                            user_input_dict["attention_mask"])
            bpr_loss = new_utils.compute_bpr_loss(model.bpr_loss, user_hidden_state, pos_hidden_state,
                                                  neg_hidden_state)
            aug_index_output = model.get_encoder_state(**aug_input_dict, **labels, ty="item")
            aug_hidden_state = new_utils.get_lastpos_state(aug_index_output.encoder_last_hidden_state,
                                                           aug_input_dict["attention_mask"])
            cl_loss = new_utils.compute_bpr_loss(model.bpr_loss, pos_hidden_state, aug_hidden_state,
                                                 neg_hidden_state)
            return GENERATE_LAMDA * generative_loss + bpr_loss + CONTENT_CL_LAMDA * cl_loss

        # ---- decoding (src/evaluation.py constrained_eval_process, one batch) ----------------------------------
        @torch.no_grad()
        def generate_topk(self, interaction, k):
            items = self.user_items(interaction).tolist()  # the history, most recent first (official 'latest')
            seen, _ = self.history(interaction)
            batch = [{"content": [i for i in row if i], "atomid": [i for i in row if i], "target": [0],
                      "intered": [i for i in row_seen if i]} for row, row_seen in zip(items, seen.tolist())]
            user_input_dict, _, user_intered = self.valid_collator.collate_fn(batch)  # no target reaches the model
            generate_config = {"num_beams": self.beam_size, "num_return_sequences": self.beam_size,
                               "max_new_tokens": self.official.config.code_length,
                               "eos_token_id": self.official.config.code_size + 1, "row": 1,
                               "prefix_allowed_tokens_fn": self.prefix_tree}  # model_eval.py:90-96
            outputs = self.official.predict(generate_config, **self._to_device(user_input_dict))
            batch_size = len(batch)
            outputs = outputs.reshape([batch_size, -1, outputs.shape[-1]])
            outputs = outputs[:, :, 1:].tolist()
            new_cid_list = evaluation.output_preprocess(outputs)
            prediction = evaluation.decode_cid2atomid(new_cid_list, self.cid2atom, self.unknown_id)
            prediction, _, _, _ = evaluation.cut_intered_prediction(prediction, user_intered, k, self.unknown_id)
            device = self.item_codes.device
            ranked = torch.tensor(prediction, dtype=torch.long, device=device)  # best first
            unknown = ranked == self.unknown_id
            scores = -torch.arange(k, dtype=torch.float, device=device).expand(batch_size, k)
            return ranked.masked_fill(unknown, -1), scores.masked_fill(unknown, float("-inf"))

    # Checkpoints pickle the model class by reference and load through the plugin's allow-list of model modules
    # (as benchmarks/peer_module_swap.py): the class lives in recbole_genrec.model.colarec for this process.
    OfficialColaRec.__module__ = colarec_module.__name__
    OfficialColaRec.__qualname__ = OfficialColaRec.__name__
    colarec_module.OfficialColaRec = OfficialColaRec
    return OfficialColaRec
