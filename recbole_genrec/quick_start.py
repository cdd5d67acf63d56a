"""run_recbole_genrec(), prepare_run(), objective_function(), load_data_and_model(): RecBole's quick start for the
plugin."""
import logging
import os
from contextlib import nullcontext
from logging import getLogger

from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_genrec import distributed, measure, registry, safety
from recbole_genrec.config import GenRecConfig
from recbole_genrec.data import create_dataset, data_preparation, mark_training_items
from recbole_genrec.trainer import GenRecTrainer, unique_checkpoint_file


def prepare_run(model, dataset, config_file_list, config_dict, on_prepared=None, config=None):
    """What `run_recbole_genrec` builds before training: (config, dataset, model, train_data, valid_data,
    test_data), with the logger set up, the dataset loaded, represented and tokenized, split, its training items
    marked (`mark_training_items`), and the model built on the training split (seeded as a run seeds it).
    `on_prepared(config, dataset)` runs before the model is built; `config`: a GenRecConfig already made from the
    same arguments."""
    config = config or GenRecConfig(model=model, dataset=dataset, config_file_list=config_file_list,
                                    config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    # Several processes: rank 0 creates the log folders and fits the tokenizer first, the others then read its cache.
    with distributed.rank_zero_first():
        init_logger(config)
        # RecBole's init_logger resets handlers of the root logger only; route this package's logger through it.
        logging.getLogger("recbole_genrec").propagate = True
        logger = getLogger()
        dataset_obj = create_dataset(config)
        check_topk_fits_catalogue(config, dataset_obj)  # before the config's dump: a refusal stays in sight
        logger.info(config)
        logger.info(dataset_obj)
        train_data, valid_data, test_data = data_preparation(config, dataset_obj)
    mark_training_items(train_data, valid_data, test_data)
    if on_prepared is not None:
        on_prepared(config, dataset_obj)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_obj = registry.get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model_obj)
    return config, dataset_obj, model_obj, train_data, valid_data, test_data


def training_targets(train_data):
    """The (history, target) pairs one epoch trains on: RecBole's prefix rows, also where a model's hook reduced the
    split to fewer rows that hold them all (`prefix_rows`, set by RPG's all-position loss; RecBole's own datasets
    have no such attribute)."""
    return getattr(train_data.dataset, "prefix_rows", None) or len(train_data.dataset)


def check_topk_fits_catalogue(config, dataset):
    """A top-K list longer than the catalogue cannot be ranked (RecBole's torch.topk would fail at the first
    evaluation, after a whole epoch): refused once the dataset is loaded, before the split and any training."""
    n_items, max_k = dataset.item_num - 1, max(config["topk"])  # item 0 is RecBole's padding
    if max_k > n_items:
        raise ValueError(f"topk {config['topk']} asks for {max_k} items, but {config['dataset']} has {n_items} "
                         f"items: lower topk (and valid_metric) to at most {n_items}.")


def run_recbole_genrec(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True,
                       callback_fn=None, evaluate_test=True, on_prepared=None):
    """Train `model` on `dataset` and evaluate on the test split; the RecBole `run_recbole` contract plus
    timings and sizes for side-by-side tables.

    Hooks for hyper-parameter search (recbole_genrec/tuning.py): `callback_fn(epoch_idx, valid_score)` runs after
    every validation (RecBole's `Trainer.fit` callback); `evaluate_test=False` skips the test split (test_result
    is None, as it is when `train_time_budget` paused a run with a `resume_file`: `paused` is True and the same
    call trains on); `on_prepared(config, dataset)` runs once the dataset is loaded, split and tokenized, before
    the model is built.

    `nproc` > 1 (RecBole's DDP keys) runs the same call in that many processes and returns rank 0's result
    (recbole_genrec/distributed.py); under torchrun or Ray Train every process runs it and returns the same metrics."""
    config_dict = pretrain_first(model, dataset, config_file_list, config_dict)
    config = GenRecConfig(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    if distributed.spawn_needed(config):
        return distributed.spawn(run_recbole_genrec, config, dict(
            model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict, saved=saved,
            callback_fn=callback_fn, evaluate_test=evaluate_test, on_prepared=on_prepared))
    measure.reset_peak_gpu_memory()
    config, dataset_obj, model_obj, train_data, valid_data, test_data = prepare_run(
        model, dataset, config_file_list, config_dict, on_prepared, config=config
    )
    logger = getLogger()
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)
    if not isinstance(trainer, GenRecTrainer):  # RecBole's dedicated trainers name checkpoints by the second
        trainer.saved_model_file = unique_checkpoint_file(config)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=callback_fn
    )
    test_result = None
    paused = getattr(trainer, "paused", False)  # its budget paused a resumable run: the test waits for the end
    evaluate_test = evaluate_test and not paused
    if evaluate_test:
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    semantic_ids = getattr(dataset_obj, "semantic_ids", None)
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "test_cold_start": getattr(trainer, "last_cold_start", None) if evaluate_test else None,
        "train_seconds": getattr(trainer, "train_seconds", None),
        "test_eval_seconds": getattr(trainer, "last_eval_seconds", None) if evaluate_test else None,
        "test_users": getattr(trainer, "last_eval_users", None) if evaluate_test else None,
        "test_users_per_rank": getattr(trainer, "last_eval_users_per_rank", None) if evaluate_test else None,
        "processes": distributed.world_size(),
        "epochs": getattr(trainer, "epochs_trained", None),
        "best_epoch": getattr(trainer, "best_epoch", None),
        "stopped_by_time_budget": getattr(trainer, "stopped_by_time_budget", False),
        "paused": paused,
        # Training targets: a split a model reduced to whole sequences (RPG's all-position loss) counts the prefix
        # rows it stands for, so sequences/s stay comparable across models and implementations.
        "train_sequences": training_targets(train_data),
        "text_seconds": getattr(dataset_obj, "text_seconds", None),
        "tokenizer_seconds": getattr(semantic_ids, "fit_seconds", None),
        "tokenizer_seconds_per_rank": distributed.per_rank(getattr(semantic_ids, "fit_seconds", None)),
        "peak_gpu_memory_mb": measure.peak_gpu_memory_mb(),
        "parameters": sum(p.numel() for p in model_obj.parameters()),
        "checkpoint": trainer.saved_model_file if saved else None,
        "semantic_ids": getattr(semantic_ids, "cache_path", None),
        "semantic_id_quality": getattr(semantic_ids, "quality", None),
    }


def pretraining_stage(model, dataset, config_file_list, config_dict):
    """(model, dataset, settings) of the pre-training run a model's `pretraining_run(config, config_dict)` hook
    prepares when the run asks for one (MQL4GRec with `pretrain_datasets`), else None."""
    config = GenRecConfig(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    if not registry.is_genrec_model(config["model"]) or not config["pretrain_datasets"]:
        return None
    run = config.model_class.pretraining_run(config, dict(config_dict or {}))
    return None if run is None else (config["model"], *run)


def pretrain_first(model, dataset, config_file_list, config_dict):
    """Run the model's pre-training stage if the run asks for one; the returned settings make fine-tuning start
    from its checkpoint (`pretrained_checkpoint`). Otherwise `config_dict` unchanged."""
    stage = pretraining_stage(model, dataset, config_file_list, config_dict)
    if stage is None:
        return config_dict
    result = run_recbole_genrec(*stage[:2], config_file_list=config_file_list, config_dict=stage[2],
                                evaluate_test=False)
    getLogger().info(f"Pre-trained on {stage[1]}: {result['checkpoint']}; fine-tuning starts from it.")
    return {**(config_dict or {}), "pretrain_datasets": None, "pretrained_checkpoint": result["checkpoint"]}


def dry_run_recbole_genrec(model=None, dataset=None, config_file_list=None, config_dict=None):
    """Everything `run_recbole_genrec` does up to and including its first training batch (first a pre-training
    stage's, when the run has one: `pretraining_stage`), then stop: the config checks, the dataset load and its
    checks, representation and tokenization (with the collapse check), the split, the model and its trainer
    (optimizer, learning-rate schedule), and one forward and backward pass of the first training batch, whose loss
    and gradients must be finite. No optimizer step and nothing saved: no checkpoint, no results, no TensorBoard
    file (the caches a real run would fill, text embeddings and semantic IDs, are kept for it, and RecBole's log
    records the dry run). Returns what was built, for the command line's "ready" line."""
    import torch

    stage = pretraining_stage(model, dataset, config_file_list, config_dict)
    if stage is not None:  # the pre-training stage's first batch too (its merged data, model and trainer)
        dry_run_recbole_genrec(*stage[:2], config_file_list=config_file_list, config_dict=stage[2])
    config, dataset_obj, model_obj, train_data, _, _ = prepare_run(model, dataset, config_file_list, config_dict)
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model_obj)
    try:
        if hasattr(trainer, "_build_scheduler"):  # what the plugin trainer's fit sets up before its first batch
            trainer._build_scheduler(len(train_data))
        batch = next(iter(train_data)).to(trainer.device)
        model_obj.train()
        autocast = (torch.autocast(device_type=trainer.device.type, dtype=torch.bfloat16)
                    if getattr(trainer, "bf16", False) else nullcontext())
        with autocast:
            losses = model_obj.calculate_loss(batch)
        loss = sum(losses) if isinstance(losses, tuple) else losses
        if not torch.isfinite(loss):
            raise ValueError(f"Dry run of {config['model']} on {config['dataset']}: the first training batch's loss is "
                             f"{loss.item()}: lower learning_rate or check the inputs.")
        loss.backward()
        bad = [name for name, p in model_obj.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            raise ValueError(f"Dry run of {config['model']} on {config['dataset']}: non-finite gradients in "
                             f"{', '.join(bad[:5])} after the first training batch.")
        model_obj.zero_grad(set_to_none=True)
    finally:
        _discard_tensorboard(trainer)
    semantic_ids = getattr(dataset_obj, "semantic_ids", None)
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "items": dataset_obj.item_num - 1,
        "train_sequences": len(train_data.dataset),
        "train_batches": len(train_data),
        "batch_rows": len(batch),
        "loss": float(loss.detach()),
        "parameters": sum(p.numel() for p in model_obj.parameters()),
        "semantic_id_levels": list(semantic_ids.vocab_sizes) if semantic_ids is not None else None,
        "semantic_id_quality": getattr(semantic_ids, "quality", None),
        "tokenizer_params": config["tokenizer_params"] if semantic_ids is not None else None,
    }


def _discard_tensorboard(trainer):
    """RecBole's Trainer opens a TensorBoard writer (an events file under log_tensorboard/) when it is built: a dry
    run removes that file, and the folder when nothing else is in it."""
    writer = getattr(trainer, "tensorboard", None)
    if writer is None:
        return
    log_dir = getattr(writer, "log_dir", None)
    events = getattr(getattr(getattr(writer, "file_writer", None), "event_writer", None), "_file_name", None)
    writer.close()
    if events and os.path.isfile(events):
        os.remove(events)
    if log_dir and os.path.isdir(log_dir) and not os.listdir(log_dir):
        os.rmdir(log_dir)


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """RecBole's hyper-parameter objective signature (model and dataset come from the config)."""
    return run_recbole_genrec(config_dict=config_dict, config_file_list=config_file_list, saved=saved)


def load_data_and_model(model_file, device=None):
    """Rebuild config, dataset, splits and the trained model from a checkpoint written by this plugin.
    Semantic IDs come back from the checkpoint's buffers and the tokenizer cache (no refit). `device`: where the
    model runs (default: the training run's device)."""
    checkpoint, config, dataset, train_data, valid_data, test_data = load_data(model_file, device)
    model = load_model(checkpoint, config, train_data)
    return config, model, dataset, train_data, valid_data, test_data


def load_data(model_file, device=None, config_dict=None):
    """The checkpoint (loaded through the allow-listed unpickler), its config, dataset and splits; no model yet,
    so that a caller may adjust inference-only settings (recommend.py widens the beam) before `load_model`.
    `config_dict`: settings that change where files are and what is logged, not the model (`state`, `cache_dir`)."""
    import torch

    checkpoint = safety.load_checkpoint(model_file, map_location=device)
    config = distributed.single_process(checkpoint["config"])
    if device is not None:
        config["device"] = torch.device(device)
    for key, value in (config_dict or {}).items():
        config[key] = value
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    mark_training_items(train_data, valid_data, test_data)
    return checkpoint, config, dataset, train_data, valid_data, test_data


def load_model(checkpoint, config, train_data):
    """The checkpoint's model, built from `config` on the training split and loaded with its weights."""
    init_seed(config["seed"], config["reproducibility"])
    model = registry.get_model(config["model"])(config, train_data._dataset).to(config["device"])
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return model
