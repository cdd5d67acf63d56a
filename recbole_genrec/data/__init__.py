"""Datasets and the tokenizer preprocessing hook."""
from logging import getLogger

from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation

from recbole_genrec.data.atomic import check_interactions
from recbole_genrec.data.dataset import GenRecDataset, atomic_reading
from recbole_genrec.data.semantic_ids import fit_semantic_ids, train_item_mask


def create_dataset(config):
    """The plugin's dataset for generative models, RecBole's otherwise (after checking `<dataset>.inter`)."""
    from recbole_genrec import registry

    check_interactions(config)
    for default in getattr(config, "dataset_defaults", ()):  # chosen by GenRecConfig for a dataset without a yaml
        getLogger().info(f"{config['dataset']}: {default}")
    if registry.is_genrec_model(config["model"]):
        return GenRecDataset(config)
    with atomic_reading():  # RecBole's class, reading the atomic files as GenRecDataset does (quoting off)
        return recbole_create_dataset(config)


def mark_training_items(train_data, *eval_data):
    """Set `train_item_mask` (bool [n_items + 1], items of the training split) on the dataset of every data loader:
    the evaluator's cold-start split and cold-start aware models (LIGER) read it. Works for any RecBole model."""
    mask = train_item_mask(train_data._dataset)
    for loader in (train_data, *eval_data):
        if loader is not None:
            loader._dataset.train_item_mask = mask
    return mask


__all__ = ["GenRecDataset", "create_dataset", "data_preparation", "fit_semantic_ids", "mark_training_items",
           "train_item_mask"]
