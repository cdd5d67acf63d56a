"""Datasets and the tokenizer preprocessing hook."""
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation

from recbole_genrec.data.dataset import GenRecDataset
from recbole_genrec.data.semantic_ids import fit_semantic_ids, train_item_mask


def create_dataset(config):
    """The plugin's dataset for generative models, RecBole's otherwise."""
    from recbole_genrec import registry

    if registry.is_genrec_model(config["model"]):
        return GenRecDataset(config)
    return recbole_create_dataset(config)


__all__ = ["GenRecDataset", "create_dataset", "data_preparation", "fit_semantic_ids", "train_item_mask"]
