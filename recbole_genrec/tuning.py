"""Hyper-parameter search with Ray Tune (ray[tune]==2.6.3), selected on the validation metric only.

    python run_recbole_genrec.py --model=SASRec --dataset=ml-100k --tune=hyper/SASRec.hyper --trials=8

The search space is a RecBole hyper file (`hyper/README.md`, read by recbole_genrec/hyper.py). Every trial runs
`run_recbole_genrec` in a Ray worker with its own checkpoint directory and reports the validation score after
every evaluation, which feeds an ASHA scheduler. Trials never touch the test split: after the search, the best trial (best validation score among
the trials that did not fail) is loaded from its checkpoint and evaluated on the test split once. What a search
leaves in its directory (`--tune_dir`, default `ray_results/<model>-<dataset>-<time>`):

- `results.csv`: one row per trial (tuned parameters, best validation score, status, error, seconds,
  tokenizer seconds); the same table is printed;
- `best_config.yaml`: the tuned keys of the best trial with model and dataset, usable with `--config_files`;
- `checkpoints/<trial_id>/`: each trial's checkpoint; Ray's own trial directories (logs, RecBole's `log/`).

On a cluster (`ray_address`) trials spread over its nodes (`results.csv`'s `node` column); a trial of `nproc` > 1
processes (or `gpus_per_trial` > 1, one process per GPU) runs under Ray Train's TorchTrainer, which starts the DDP
processes and their process group (recbole_genrec/distributed.py does the rest).

Semantic IDs are cached by a fingerprint of the tokenizer's inputs and parameters (`recbole_genrec/cache.py`), so
trials that only change backbone or optimiser parameters reuse the first trial's tokenizer. Trials of generative
models prepare their data under a file lock in `cache_dir`: two trials never fit the same tokenizer at once.
"""
import fcntl
import glob
import json
import logging
import math
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

from recbole_genrec import compat
from recbole_genrec.hyper import check_space, merge_params, parse_hyper_file, plain_python

logger = logging.getLogger("recbole_genrec")

SEARCH_MODES = ("random", "grid")
SCHEDULERS = ("asha", "fifo")


# ---- inside a Ray worker ----------------------------------------------------------------------------------------
class _CacheLock:
    """An exclusive `fcntl.flock` on a file: one process at a time (Ray trials are separate processes)."""

    def __init__(self, path):
        self.path = path
        self._handle = None

    def acquire(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._handle = open(self.path, "a")
        fcntl.flock(self._handle, fcntl.LOCK_EX)

    def release(self):
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


@dataclass
class _TrialSetup:
    """What every trial needs besides its sampled parameters (pickled to the workers)."""

    model: str
    dataset: str
    config_files: Optional[list]
    fixed: dict               # config overrides shared by all trials, with absolute paths
    base_dicts: dict          # default values of dict-valued keys tuned through dotted names
    checkpoint_root: str
    lock_path: Optional[str]  # set for models with a tokenizer
    bigger: bool              # valid_metric_bigger
    cpus: float
    gpus: float
    workers: int = 1          # DDP processes per trial (Ray Train's TorchTrainer when > 1)


SUMMARY_FILE = "summary.json"


def _run_trial(sampled, setup):
    """Ray Tune function trainable: one training run, reporting the validation score after every evaluation."""
    compat.apply()  # also set by the worker setup hook; harmless twice
    import ray
    import torch
    from ray.air import session

    from recbole_genrec.quick_start import run_recbole_genrec

    from recbole_genrec import distributed

    torch.set_num_threads(max(1, int(setup.cpus / setup.workers)))
    checkpoint_dir = os.path.join(setup.checkpoint_root, session.get_trial_id())
    os.makedirs(checkpoint_dir, exist_ok=True)
    overrides = dict(setup.fixed)
    overrides.update(merge_params(sampled, setup.base_dicts))
    overrides["checkpoint_dir"] = checkpoint_dir
    # RecBole's Config writes gpu_id into CUDA_VISIBLE_DEVICES: give it the GPU Ray assigned to this trial (a DDP
    # trial's processes keep the devices Ray Train made visible; distributed.py picks the local rank's one).
    overrides["gpu_id"] = ",".join(str(i) for i in ray.get_gpu_ids()) if setup.gpus else ""
    node = ray.get_runtime_context().get_node_id()[:12]  # where the trial ran: results.csv's `node` column

    state = {"best": None, "tokenizer_seconds": None}
    # Only a trial's rank 0 prepares data under the lock; its other processes wait for it in rank_zero_first.
    lock = _CacheLock(setup.lock_path) if setup.lock_path and distributed.rank() == 0 else None

    def on_prepared(config, dataset):
        semantic_ids = getattr(dataset, "semantic_ids", None)
        state["tokenizer_seconds"] = getattr(semantic_ids, "fit_seconds", None)
        if lock:
            lock.release()  # the tokenizer is fitted (or loaded from the cache): other trials may go on

    def report(epoch_idx, valid_score):
        score = float(valid_score)
        best = state["best"]
        if best is None or (score > best if setup.bigger else score < best):
            state["best"] = best = score
        metrics = {"valid_score": score, "best_valid_score": best, "epoch": epoch_idx + 1, "node": node}
        if state["tokenizer_seconds"] is not None:
            metrics["tokenizer_seconds"] = state["tokenizer_seconds"]
        session.report(metrics)

    if lock:
        lock.acquire()
    try:
        result = run_recbole_genrec(
            setup.model, setup.dataset, config_file_list=setup.config_files, config_dict=overrides, saved=True,
            callback_fn=report, evaluate_test=False, on_prepared=on_prepared,
        )
    finally:
        if lock:
            lock.release()
    if not distributed.is_main_process():
        return
    summary = {
        "best_valid_score": plain_python(result["best_valid_score"]),
        "checkpoint": result["checkpoint"],
        "tokenizer_seconds": result["tokenizer_seconds"],
        "epochs": result["epochs"],
        "train_seconds": result["train_seconds"],
        "node": node,
        "processes": result["processes"],
    }
    with open(os.path.join(checkpoint_dir, SUMMARY_FILE), "w") as handle:
        json.dump(summary, handle)


def trial_processes(base, gpus_per_trial):
    """DDP processes per trial: `nproc` of the fixed configuration (CPU processes with gloo, or one per GPU), or
    `gpus_per_trial` when it asks for more than one GPU (one process per GPU)."""
    nproc = int(base["nproc"] or 1)
    if gpus_per_trial > 1:
        if gpus_per_trial != int(gpus_per_trial):
            raise ValueError(f"--gpus_per_trial={gpus_per_trial:g}: above 1 a trial runs one DDP process per GPU, "
                             f"so give a whole number (or at most 1 for one process).")
        if nproc > 1 and nproc != int(gpus_per_trial):
            raise ValueError(f"--nproc={nproc} and --gpus_per_trial={gpus_per_trial:g} disagree: a DDP trial runs one "
                             f"process per GPU; drop --nproc.")
        return int(gpus_per_trial)
    if nproc > 1 and gpus_per_trial:
        raise ValueError(f"--nproc={nproc} processes per trial need a GPU each or none: --gpus_per_trial={nproc} "
                         f"(one process per GPU) or 0 (CPU processes).")
    return nproc


def _ddp_trainable(setup):
    """A trial of `setup.workers` DDP processes: Ray Train's TorchTrainer starts them (on one node or several),
    initialises their process group (NCCL with GPUs, gloo without) and runs `_run_trial` in each; the trial's CPUs
    and GPUs are shared among them."""
    from ray.air.config import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from recbole_genrec.distributed import PROCESS_GROUP_TIMEOUT

    def train_loop(sampled):
        _run_trial(sampled, setup)

    per_worker = {"CPU": setup.cpus / setup.workers, "GPU": setup.gpus / setup.workers}
    return TorchTrainer(
        train_loop,
        torch_config=TorchConfig(backend="nccl" if setup.gpus else "gloo",
                                 timeout_s=int(PROCESS_GROUP_TIMEOUT.total_seconds())),
        scaling_config=ScalingConfig(num_workers=setup.workers, use_gpu=bool(setup.gpus),
                                     resources_per_worker=per_worker, trainer_resources={"CPU": 0}),
    )


def _evaluate_checkpoint(checkpoint):
    """Load a trained trial from its checkpoint and score its validation and test splits (once, at the end)."""
    compat.apply()
    from recbole_genrec import registry
    from recbole_genrec.quick_start import load_data_and_model
    from recbole_genrec.results import flat_metrics

    config, model, _, _, valid_data, test_data = load_data_and_model(checkpoint)
    trainer = registry.get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return {
        "valid": flat_metrics(trainer.evaluate(valid_data, load_best_model=False)),
        "test": flat_metrics(trainer.evaluate(test_data, load_best_model=False)),
    }


# ---- on the driver ------------------------------------------------------------------------------------------------
def init_ray(address=None, num_cpus=None):
    """Start a local Ray (`num_cpus`, default all cores) or join the cluster at `address`, with the numpy/RecBole
    compatibility shims installed in every worker process (ray 2.6.3 itself needs them under numpy >= 2)."""
    import ray

    runtime_env = {"worker_process_setup_hook": compat.worker_setup}
    if address:
        return ray.init(address=address, runtime_env=runtime_env)
    return ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env)


def _check_workers_have_shims():
    """A Ray session started by the caller must install the shims in its workers (see `init_ray`)."""
    import ray

    def numpy_aliases_present():  # nested: shipped by value, so the worker does not import recbole_genrec
        import numpy as np

        return hasattr(np, "bool8") and hasattr(np, "float_")

    if not ray.get(ray.remote(num_cpus=0)(numpy_aliases_present).remote()):
        raise RuntimeError(
            "Ray is already running without recbole_genrec's worker setup hook, so its workers lack the numpy "
            "aliases that ray 2.6.3 and RecBole need. Start Ray with recbole_genrec.tuning.init_ray(...) or pass "
            "runtime_env={'worker_process_setup_hook': recbole_genrec.compat.worker_setup} to ray.init."
        )


def _trial_timer():
    """A Tune callback recording every trial (in start order) with its wall-clock seconds."""
    from ray.tune import Callback

    class TrialTimer(Callback):
        def __init__(self):
            self.trials, self.started, self.ended = [], {}, {}

        def on_trial_start(self, iteration, trials, trial, **info):
            if trial.trial_id not in self.started:
                self.trials.append(trial)
            self.started[trial.trial_id] = time.time()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ended[trial.trial_id] = time.time()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.ended[trial.trial_id] = time.time()

        def seconds(self, trial):
            start, end = self.started.get(trial.trial_id), self.ended.get(trial.trial_id)
            return end - start if start is not None and end is not None else None

    return TrialTimer()


class _OneLineTrialErrors(logging.Filter):
    """Ray Tune logs a failed trial with its worker's whole traceback: on the console, one line (the exception) is
    enough, as the trial's error.txt keeps the traceback (listed by Tune at the end) and results.csv the line."""

    LOGGER = "ray.tune.execution.tune_controller"

    def filter(self, record):
        if record.exc_info and record.exc_info[1] is not None and record.getMessage().startswith("Trial task failed"):
            error = record.exc_info[1]
            cause = getattr(error, "cause", None) or error  # a RayTaskError carries the worker's exception
            line = traceback.format_exception_only(type(cause), cause)[-1].strip()
            record.msg, record.args = f"{record.getMessage()}: {line} (traceback in the trial's error.txt)", ()
            record.exc_info = record.exc_text = None
        return True


def _error_message(trial):
    """The exception line of a failed trial (Ray's error file holds the whole traceback)."""
    text = ""
    if trial.error_file and os.path.isfile(trial.error_file):
        with open(trial.error_file) as handle:
            text = handle.read()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception|Interrupt|Exit)\b.*", line) or "RayActorError" in line:
            return line[:300]
    return (lines[-1][:300] if lines else "failed (no error file)")


@dataclass
class TuningResult:
    model: str
    dataset: str
    valid_metric: str
    rows: list                 # one dict per trial (the CSV rows)
    best: Optional[dict]       # the best row, None when every trial failed
    best_config: dict          # what best_config.yaml holds
    best_checkpoint: Optional[str]
    valid_result: dict = field(default_factory=dict)  # re-evaluated from the best checkpoint
    test_result: dict = field(default_factory=dict)   # the only test evaluation of the search
    tune_dir: str = ""
    results_csv: str = ""
    best_config_yaml: str = ""
    wall_seconds: float = 0.0
    table: str = ""


def check_search(model, dataset, hyper_file, config_file_list=None, config_dict=None, search="random",
                 scheduler="asha", ray_address=None):
    """What a search checks before Ray starts (also the whole of `--tune ... --dry_run=True`): the options, the
    hyper file (format, values, keys of dict-valued settings) and the fixed part of the configuration (model,
    dataset, keys and types), resolved once with the absolute paths every trial uses (Ray runs each trial in its
    own working directory). Every value the search may give an option must have the option's type (as a
    config value must: config.check_value_types). Returns (space, base config, fixed overrides, base dicts,
    absolute config files)."""
    from recbole_genrec.config import GenRecConfig

    if search not in SEARCH_MODES:
        raise ValueError(f"Unknown search {search!r}: use one of {', '.join(SEARCH_MODES)}")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}: use one of {', '.join(SCHEDULERS)}")
    if ray_address and str(ray_address).startswith("ray://"):
        raise ValueError("Ray Client addresses (ray://) are not supported: run the search on a node of the "
                         "cluster with --ray_address=auto (or HOST:6379).")
    space = parse_hyper_file(hyper_file)
    config_files = [os.path.abspath(f) for f in config_file_list] if config_file_list else None
    fixed = dict(config_dict or {})
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # RecBole's Config overwrites it
    base = GenRecConfig(model=model, dataset=dataset, config_file_list=config_files, config_dict=fixed)
    if visible is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    fixed["data_path"] = os.path.dirname(base["data_path"])
    fixed["cache_dir"] = base["cache_dir"]
    base_dicts = check_space(space, base, hyper_file)
    return space, base, fixed, base_dicts, config_files


def run_tuning(model, dataset, hyper_file, config_file_list=None, config_dict=None, trials=None, search="random",
               ray_address=None, ray_num_cpus=None, cpus_per_trial=1, gpus_per_trial=0, max_concurrent=None,
               tune_dir=None, scheduler="asha", grace_period=1, reduction_factor=2, verbose=1):
    """Search `hyper_file`'s space for `model` on `dataset`; see the module docstring.

    trials: random search -> number of sampled configurations (default 10); grid search (every `choice` is a
    grid axis) -> samples per grid point (default 1). ray_address: None starts a local Ray (ray_num_cpus CPUs,
    default all); an address ("auto", "HOST:6379") joins a running cluster. A Ray session the caller already
    started is used as it is (and left running)."""
    started = time.time()
    space, base, fixed, base_dicts, config_files = check_search(
        model, dataset, hyper_file, config_file_list=config_file_list, config_dict=config_dict, search=search,
        scheduler=scheduler, ray_address=ray_address)
    import ray  # after the checks: a refused search does not wait for Ray's import
    from ray import air, tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from recbole_genrec import registry

    valid_metric, bigger = base["valid_metric"], bool(base["valid_metric_bigger"])

    tune_dir = os.path.abspath(tune_dir or os.path.join(
        "ray_results", f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"))
    os.makedirs(tune_dir, exist_ok=True)
    lock_path = os.path.join(base["cache_dir"], dataset, ".prepare.lock") if registry.is_genrec_model(model) else None
    setup = _TrialSetup(model=model, dataset=dataset, config_files=config_files, fixed=fixed, base_dicts=base_dicts,
                        checkpoint_root=os.path.join(tune_dir, "checkpoints"), lock_path=lock_path, bigger=bigger,
                        cpus=cpus_per_trial, gpus=gpus_per_trial, workers=trial_processes(base, gpus_per_trial))

    # Evaluations per trial (ASHA's time axis): the largest `epochs` over the smallest `eval_step`.
    epochs = space["epochs"].extremes()[1] if "epochs" in space else base["epochs"]
    eval_step = space["eval_step"].extremes()[0] if "eval_step" in space else base["eval_step"]
    max_evaluations = max(1, int(epochs) // max(1, int(eval_step)))
    grid = search == "grid"
    num_samples = int(trials) if trials else (1 if grid else 10)
    param_space = {name: param.domain(grid=grid) for name, param in space.items()}

    started_ray = not ray.is_initialized()
    if started_ray:
        init_ray(ray_address, ray_num_cpus)
    else:
        _check_workers_have_shims()
    one_line_errors = _OneLineTrialErrors()
    logging.getLogger(_OneLineTrialErrors.LOGGER).addFilter(one_line_errors)
    try:
        timer = _trial_timer()
        asha = (ASHAScheduler(time_attr="training_iteration", max_t=max_evaluations,
                              grace_period=min(max(1, int(grace_period)), max_evaluations),
                              reduction_factor=reduction_factor)
                if scheduler == "asha" else None)
        if setup.workers > 1:
            trainable, param_space = _ddp_trainable(setup), {"train_loop_config": param_space}
        else:
            trainable = tune.with_resources(tune.with_parameters(_run_trial, setup=setup),
                                            {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric="valid_score", mode="max" if bigger else "min", num_samples=num_samples, scheduler=asha,
                # the generator's own limit: Tune ignores `max_concurrent_trials` beside a SearchGenerator
                search_alg=BasicVariantGenerator(random_state=base["seed"], max_concurrent=max_concurrent or 0),
                reuse_actors=False,
            ),
            run_config=air.RunConfig(
                name=os.path.basename(tune_dir), storage_path=os.path.dirname(tune_dir), callbacks=[timer],
                failure_config=air.FailureConfig(max_failures=0), verbose=verbose,
            ),
        )
        tuner.fit()  # failed trials do not raise: they are rows of the table
        rows, best_index, checkpoints = _collect_rows(timer, space, setup, base, valid_metric, bigger)
        result = TuningResult(model=model, dataset=dataset, valid_metric=valid_metric, rows=rows,
                              best=rows[best_index] if best_index is not None else None, best_config={},
                              best_checkpoint=checkpoints[best_index] if best_index is not None else None,
                              tune_dir=tune_dir)
        if result.best_checkpoint:
            # One process scores the best checkpoint: a DDP trial's share of one process (it fits where one ran).
            evaluate = ray.remote(num_cpus=cpus_per_trial / setup.workers,
                                  num_gpus=gpus_per_trial / setup.workers)(_evaluate_checkpoint)
            scores = ray.get(evaluate.remote(result.best_checkpoint))
            result.valid_result, result.test_result = scores["valid"], scores["test"]
    finally:
        logging.getLogger(_OneLineTrialErrors.LOGGER).removeFilter(one_line_errors)
        if started_ray:
            ray.shutdown()

    if result.best is not None:
        sampled = {name: result.best[name] for name in space}
        result.best_config = {"model": model, "dataset": dataset, **plain_python(merge_params(sampled, base_dicts))}
    result.wall_seconds = time.time() - started
    _write_outputs(result, space, config_dict or {})
    return result


def _collect_rows(timer, space, setup, base, valid_metric, bigger):
    """One row per trial, the index of the best finished trial (validation metric only) and each checkpoint."""
    rows, checkpoints = [], []
    for trial in sorted(timer.trials, key=lambda t: t.trial_id):  # ids end with the trial's creation index
        sampled = trial.config  # Ray's trial config, not a recbole one
        config = sampled.get("train_loop_config", sampled)  # a DDP trial's sampled values (TorchTrainer)
        last = trial.last_result or {}
        summary_path = os.path.join(setup.checkpoint_root, trial.trial_id, SUMMARY_FILE)
        summary = {}
        if os.path.isfile(summary_path):
            with open(summary_path) as handle:
                summary = json.load(handle)
        evaluations = last.get("training_iteration", 0) if last else 0
        if trial.status == "ERROR":
            status, error = "ERROR", _error_message(trial)
        else:
            # A trial is complete when it returned (and wrote its summary; RecBole's early stopping may end it
            # before its last epoch) or when it reached its last evaluation (where ASHA stops every trial);
            # otherwise the scheduler stopped it early.
            epochs = config.get("epochs", base["epochs"])
            planned = max(1, int(epochs) // max(1, int(config.get("eval_step", base["eval_step"]))))
            status, error = ("COMPLETED" if summary or evaluations >= planned else "STOPPED"), ""
        score = summary.get("best_valid_score", last.get("best_valid_score"))
        row = {"trial": trial.trial_id, "status": status}
        row.update({name: plain_python(config.get(name)) for name in space})
        row[f"valid_{valid_metric.lower()}"] = score
        row["evaluations"] = evaluations
        row["tokenizer_seconds"] = summary.get("tokenizer_seconds", last.get("tokenizer_seconds"))
        seconds = timer.seconds(trial)
        row["seconds"] = round(seconds if seconds is not None else last.get("time_total_s", 0.0), 1)
        row["node"] = summary.get("node", last.get("node"))
        row["error"] = error
        rows.append(row)
        checkpoint = summary.get("checkpoint")
        if not checkpoint:
            saved = sorted(glob.glob(os.path.join(setup.checkpoint_root, trial.trial_id, "*.pth")))
            checkpoint = saved[-1] if saved else None
        checkpoints.append(checkpoint)

    key = f"valid_{valid_metric.lower()}"
    candidates = [i for i, row in enumerate(rows)
                  if row["status"] != "ERROR" and row[key] is not None and not math.isnan(row[key])
                  and checkpoints[i]]
    if not candidates:
        return rows, None, checkpoints
    pick = max if bigger else min
    best_score = pick(rows[i][key] for i in candidates)
    best_index = next(i for i in candidates if rows[i][key] == best_score)  # ties: the earliest trial
    return rows, best_index, checkpoints


def _format_rows(rows, space):
    """Rows with readable cells: tuned values with 4 significant digits, seconds with one decimal."""
    formatted = []
    for row in rows:
        cells = {}
        for key, value in row.items():
            if key in space and isinstance(value, float):
                value = f"{value:.4g}"
            elif key.endswith("seconds") and isinstance(value, float):
                value = f"{value:.1f}"
            elif isinstance(value, (list, dict)):
                value = json.dumps(value)
            cells[key] = value
        formatted.append(cells)
    return formatted


def _write_outputs(result, space, fixed):
    """results.csv, the printed table and summary, best_config.yaml (`fixed`: the caller's fixed overrides)."""
    import yaml

    from recbole_genrec.results import format_table, write_csv

    tuned = {name.split(".")[0] for name in space}
    fixed = {key: value for key, value in fixed.items() if key not in tuned}
    result.results_csv = os.path.join(result.tune_dir, "results.csv")
    write_csv([{k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()}
               for row in result.rows], result.results_csv)
    result.table = format_table(_format_rows(result.rows, space)) if result.rows else "(no trials ran)"
    lines = [f"\nRay Tune search: {result.model} on {result.dataset}, {len(result.rows)} trials, "
             f"{result.wall_seconds:.0f} s wall time; selection on valid {result.valid_metric}\n{result.table}\n"]
    fitted = [row for row in result.rows if row.get("tokenizer_seconds")]
    reused = [row for row in result.rows if row.get("tokenizer_seconds") == 0.0]
    if fitted or reused:
        fits = ", ".join(f"{row['trial']}: {row['tokenizer_seconds']:.1f} s" for row in fitted) or "-"
        lines.append(f"Tokenizer fitted in {len(fitted)} trial(s) ({fits}); "
                     f"loaded from the cache in {len(reused)} trial(s).")
    if result.best is None:
        lines.append("No trial finished: no best configuration (see the error column).")
    else:
        result.best_config_yaml = os.path.join(result.tune_dir, "best_config.yaml")
        header = [
            f"# Best of {len(result.rows)} trials ({result.model} on {result.dataset}), chosen on valid "
            f"{result.valid_metric} = {result.best[f'valid_{result.valid_metric.lower()}']:.4f} "
            f"(trial {result.best['trial']}).",
            f"# Test (evaluated once, from the trial's checkpoint): {_metrics_text(result.test_result)}",
            f"# Search directory: {result.tune_dir}",
            "# Settings fixed during the search (not included below): "
            + (json.dumps(plain_python(fixed), sort_keys=True, default=str) if fixed else "none"),
        ]
        with open(result.best_config_yaml, "w") as handle:
            handle.write("\n".join(header) + "\n")
            yaml.safe_dump(result.best_config, handle, sort_keys=False, default_flow_style=False)
        lines.append(f"Best trial {result.best['trial']}: "
                     f"{json.dumps({k: v for k, v in result.best_config.items() if k not in ('model', 'dataset')})}")
        lines.append(f"  valid (from its checkpoint): {_metrics_text(result.valid_result)}")
        lines.append(f"  test  (evaluated once):      {_metrics_text(result.test_result)}")
        lines.append(f"Best configuration written to {result.best_config_yaml} (use it with "
                     f"--model={result.model} --dataset={result.dataset} --config_files=...)")
    lines.append(f"Trial table written to {result.results_csv}")
    print("\n".join(lines))


def _metrics_text(metrics):
    return ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()) if metrics else "-"
