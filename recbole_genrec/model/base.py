"""Base class of every generative recommender: a RecBole SequentialRecommender with a semantic-ID table."""
import torch
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_genrec.data.semantic_ids import fit_semantic_ids, train_item_mask
from recbole_genrec.representation import item_text_embeddings
from recbole_genrec.tokenization.published import PUBLISHED, published_semantic_ids


class GenerativeRecommender(SequentialRecommender):
    """Holds the items' semantic IDs as a buffer `item_codes [n_items + 1, L]` (row 0 = padding), indexed by the
    history only. Subclasses implement `calculate_loss(interaction)` and `generate_topk(interaction, k) ->
    (items [B, k] with -1 for missing, scores [B, k])`, which the shared trainer turns into RecBole metrics.

    `full_sort_predict`/`predict` stay RecBole's (NotImplementedError) unless a method scores the whole catalogue
    exactly (RPG); the trainer ranks any model that has `generate_topk` through it.

    `generate_topk` may read only the history fields (item_id_list, item_length, user_id): RecBole's evaluation
    batches also carry the target item id and its features.

    The stages' hooks, each declared below with its contract: `build_semantic_ids` (the tokenizer preprocessing
    hook), `prepare_training_split`, `check_config`, `pretraining_run`, `beam_width_key`, `selection_topk`."""

    input_type = InputType.POINTWISE

    # (tokenizer name, why) for methods built on one tokenizer's structure; GenRecConfig checks it before any work
    required_tokenizer = None

    @staticmethod
    def beam_width_key(config):
        """The config key of the number of candidates decoding keeps (checked >= the largest topk before a run),
        or None where decoding is exhaustive."""
        return "beam_size"

    # ---- the tokenizer preprocessing hook (run by GenRecDataset.build on the training split) -----------------
    @classmethod
    def build_semantic_ids(cls, config, dataset, train_dataset):
        """Default pipeline: item text -> sentence embeddings -> config['tokenizer'] -> semantic IDs; with
        `tokenizer: Published`, the dataset's published codes instead (no item content is read)."""
        if config["tokenizer"] == PUBLISHED:
            return published_semantic_ids(config, dataset)
        vectors = item_text_embeddings(config, dataset)
        return fit_semantic_ids(config, dataset, vectors, fit_mask=cls.tokenizer_fit_mask(config, train_dataset))

    @classmethod
    def prepare_training_split(cls, config, dataset, train_dataset):
        """After the tokenizer hook, before any data loader exists (so every loader and the learning-rate schedule's
        step count see it): a method's change to the training split (RPG: one row per sequence, with
        `train_dataset.prefix_rows` = the prefix rows, i.e. loss targets, they stand for) or to its batch size
        (MQL4GRec: batches counted in samples). Default: none."""

    @classmethod
    def check_config(cls, config):
        """The method's own settings, checked by GenRecConfig before any work; a ValueError names the fix."""

    @classmethod
    def pretraining_run(cls, config, config_dict):
        """(dataset, settings) of a pre-training run the command runs first (MQL4GRec's `pretrain_datasets`), or
        None: no pre-training stage."""
        return None

    @staticmethod
    def tokenizer_fit_mask(config, train_dataset):
        """Items the quantiser is trained on: all items (content is known for every item) unless
        `tokenizer_fit_on: train` restricts it to items of the training sequences (RPG's choice)."""
        return train_item_mask(train_dataset) if config["tokenizer_fit_on"] == "train" else None

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        semantic_ids = getattr(dataset, "semantic_ids", None)
        if semantic_ids is None:
            raise ValueError(
                f"{config['model']} needs semantic IDs on the dataset: create it with "
                f"recbole_genrec.data.create_dataset (not RecBole's), whose build() runs the tokenizer hook."
            )
        self.semantic_ids = semantic_ids
        self.register_buffer("item_codes", semantic_ids.codes.long().clone())
        self.vocab_sizes = list(semantic_ids.vocab_sizes)
        self.n_levels = self.item_codes.shape[1]
        self.beam_size = config["beam_size"]

    def load_state_dict(self, state_dict, strict=True, assign=False):
        # The weights only mean something with the semantic IDs they were trained on; a refitted tokenizer (cache
        # missing, other settings) would silently map generated IDs to other items.
        saved = state_dict.get("item_codes")
        if saved is not None and not torch.equal(saved.cpu(), self.item_codes.cpu()):
            where = getattr(self.semantic_ids, "cache_path", None)
            raise ValueError(
                f"The checkpoint's semantic IDs differ from the dataset's ({where}): the tokenizer was refitted since "
                f"training (cache missing or settings changed). Restore the semantic-ID cache file of the training "
                f"run under `cache_dir`, or retrain."
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def selection_topk(self, interaction, k):
        """The ranking validation selects checkpoints on (the trainer's validation): the test's, `generate_topk`,
        unless a method's official code selects on another (LIGER: dense retrieval; RPG: exact scoring)."""
        return self.generate_topk(interaction, k)

    def history(self, interaction):
        """(item ids [B, T] right-padded with 0, lengths [B]) — the only item fields a generator may read."""
        return interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
