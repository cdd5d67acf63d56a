"""Dataset whose build() runs the model's tokenizer hook on the training split."""
from recbole.data.dataset import SequentialDataset


class GenRecDataset(SequentialDataset):
    """A SequentialDataset that derives the items' semantic IDs after splitting.

    `build()` returns RecBole's train/valid/test splits; the model class's `build_semantic_ids(config, dataset,
    train_dataset)` hook then turns item content (and, for some methods, collaborative signals learned on the
    training split only) into semantic IDs. The splits are shallow copies, so the one table is shared by all.
    The IDs never enter the item features RecBole joins onto batches."""

    def build(self):
        from recbole_genrec import registry

        splits = super().build()
        model_class = registry.get_model(self.config["model"])
        semantic_ids = model_class.build_semantic_ids(self.config, self, splits[0])
        for dataset in (self, *splits):
            dataset.semantic_ids = semantic_ids
        return splits
