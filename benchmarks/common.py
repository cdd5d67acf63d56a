"""What the benchmark scripts share. Importing it puts this checkout on the path (its recbole_genrec, ahead of an
installed copy, and benchmarks/ for the scripts that import one another), so a script runs from a checkout without
installing the package: each script imports it before recbole_genrec."""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "benchmarks")):
    if path not in sys.path:
        sys.path.insert(0, path)


def commit(*paths):
    """This checkout's short commit for a result row, `+changes` when tracked files under `paths` (every tracked
    file when none is given) differ from it."""
    def git(*args):
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no", "--", *paths) else "")


def prepare_split(model, dataset_name, config_dict):
    """The plugin's config, dataset (with the model's semantic IDs) and splits, training items marked, without a
    model or RecBole's log files; seconds spent."""
    from recbole.utils import init_seed

    from recbole_genrec.config import GenRecConfig
    from recbole_genrec.data import create_dataset, data_preparation, mark_training_items

    start = time.time()
    config = GenRecConfig(model=model, dataset=dataset_name, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    mark_training_items(train_data, valid_data, test_data)
    return config, dataset, train_data, valid_data, test_data, time.time() - start


def run_stock_recbole(model, dataset, config_dict=None, saved=True):
    """The same run through stock RecBole only (its Config, dataset, model, Trainer and evaluator): the reference
    for speed and metrics beside `run_recbole_genrec`, returning the same keys (generative-only ones None).

    The plugin's protocol (`properties/overall.yaml`, `properties/dataset/<dataset>.yaml`) and `config_dict` are
    handed to RecBole's Config, whose values must then equal GenRecConfig's (checked), so both runs train and
    evaluate on the same split with the same settings. Seconds are measured as the plugin
    trainer measures them: training epochs only (validation excluded), and one test evaluation; `train_time_budget`
    applies as in the plugin trainer (checked between RecBole's epochs, which run unchanged)."""
    from functools import partial
    from logging import getLogger

    from recbole.config import Config
    from recbole.data import create_dataset as recbole_create_dataset
    from recbole.utils import get_trainer, init_logger, init_seed, set_color

    from recbole_genrec import measure, registry, safety
    from recbole_genrec.config import GenRecConfig
    from recbole_genrec.data import data_preparation
    from recbole_genrec.trainer import TimeBudget

    plugin_config = GenRecConfig(model=model, dataset=dataset, config_dict=config_dict)
    stock_dict = {**_plugin_yaml(model, dataset), **(config_dict or {})}
    if plugin_config["train_neg_sample_args"]["distribution"] == "none":  # the plugin's CE rule (config.py)
        stock_dict["train_neg_sample_args"] = None
    stock_dict["data_path"] = os.path.dirname(plugin_config["data_path"])
    stock_dict.update({key: plugin_config[key] for key in ("checkpoint_dir", "cache_dir") if key in stock_dict})
    keys = set(stock_dict) - {"data_path", "model", "dataset"}
    argv, sys.argv = sys.argv, sys.argv[:1]  # RecBole's Config would also read --key=value from the command line
    try:
        config = Config(model=model, dataset=dataset, config_dict=stock_dict)
    finally:
        sys.argv = argv
    differ = sorted(key for key in keys if config[key] != plugin_config[key])
    if differ or os.path.realpath(config["data_path"]) != os.path.realpath(plugin_config["data_path"]):
        raise ValueError(f"Stock RecBole's config differs from the plugin's for {differ or ['data_path']}: the two "
                         f"runs would not be comparable.")
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    measure.reset_peak_gpu_memory()
    dataset_obj = recbole_create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset_obj)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_obj = registry.get_model(model)(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, model_obj)
    timing = {"train_seconds": 0.0, "epochs": 0}
    budget = TimeBudget(config["train_time_budget"])
    train_epoch = trainer._train_epoch

    def timed_train_epoch(*args, **kwargs):  # RecBole's epoch, untouched, with a stopwatch (and budget) around it
        budget.check(timing["epochs"])
        start = time.time()
        loss = train_epoch(*args, **kwargs)
        timing["train_seconds"] += time.time() - start
        timing["epochs"] += 1
        return loss

    trainer._train_epoch = timed_train_epoch
    fit = partial(trainer.fit, train_data, valid_data, saved=saved, show_progress=config["show_progress"])
    best_valid_score, best_valid_result = budget.run(trainer, fit, saved)
    if saved:  # RecBole's own reload fails on torch >= 2.6 (weights-only unpickler); same weights, loaded here
        checkpoint = safety.load_checkpoint(trainer.saved_model_file, trainer.device)
        model_obj.load_state_dict(checkpoint["state_dict"])
        model_obj.load_other_parameter(checkpoint.get("other_parameter"))
    start = time.time()
    test_result = trainer.evaluate(test_data, load_best_model=False, show_progress=config["show_progress"])
    test_eval_seconds = time.time() - start
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        "model": model,
        "dataset": dataset,
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "train_seconds": timing["train_seconds"],
        "test_eval_seconds": test_eval_seconds,
        "test_users": test_data.sample_size,
        "epochs": timing["epochs"],
        "stopped_by_time_budget": budget.reached,
        "train_sequences": len(train_data.dataset),
        "text_seconds": None,
        "tokenizer_seconds": None,
        "peak_gpu_memory_mb": measure.peak_gpu_memory_mb(),
        "parameters": sum(p.numel() for p in model_obj.parameters()),
        "checkpoint": trainer.saved_model_file if saved else None,
        "semantic_ids": None,
        "semantic_id_quality": None,
    }


def _plugin_yaml(model, dataset):
    """What the plugin's yaml files set for this model and dataset (stock RecBole does not read them)."""
    import yaml

    from recbole_genrec.config import plugin_property_files

    values = {}
    for path in plugin_property_files(model, dataset):
        with open(path) as handle:
            values.update(yaml.safe_load(handle) or {})
    return values
