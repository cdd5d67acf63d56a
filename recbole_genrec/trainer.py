"""One trainer and one evaluator for every model.

Classic models (SASRec, ...) are scored exactly as stock RecBole scores them: full_sort_predict -> top-K -> the
`rec.topk` structure. Generative models return their top-K item lists (beam search, graph decoding, ...) and
go through the same `rec.topk` structure. Either way RecBole's own metric classes compute the numbers, so a
table of SASRec vs TIGER compares like with like on identical splits.
"""
import json
import math
import os
import random
import uuid
from contextlib import nullcontext
from functools import partial
from time import time

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.evaluator import Collector
from recbole.evaluator.collector import DataStruct
import recbole.trainer.trainer as recbole_trainer
from recbole.trainer import Trainer
from recbole.utils import dict2str, get_local_time, set_color
from torch.nn.utils import clip_grad_norm_

from recbole_genrec import distributed, safety
from recbole_genrec.cache import atomic_path
from recbole_genrec.data.device_batches import DeviceBatches
from recbole_genrec.progress import progress

# RecBole's loops (its training epoch, its sampled evaluation) show `show_progress` through progress(): a bar on a
# terminal, periodic log lines otherwise (a tqdm bar in a log file is one line of carriage returns).
recbole_trainer.tqdm = progress


def topk_hits(topk_items, positive_u, positive_i, n_items):
    """RecBole's `rec.topk` for ranked item lists topk_items long [B, k] (-1 = no item): long [B, k + 1], column
    j < k 1 where the user's j-th item is one of the user's positives (0 where the list has no item), column k the
    number of the user's distinct positives.

    RecBole's Collector reads both off a [B, n_items] matrix of positives; here the batch's distinct (user, item)
    pairs are sorted once and every ranked item is looked up among them: O((P + B k) log P) for P positives, the
    same numbers (and dtype) without a row of the catalogue per user."""
    n_rows = len(topk_items)
    pairs = torch.unique(positive_u.long() * n_items + positive_i.long())  # sorted, each (user, item) once
    pos_len = torch.bincount(torch.div(pairs, n_items, rounding_mode="floor"), minlength=n_rows).unsqueeze(1)
    wanted = torch.arange(n_rows, device=topk_items.device).unsqueeze(1) * n_items + topk_items.clamp(min=0)
    found = torch.zeros_like(wanted, dtype=torch.bool)
    if len(pairs):
        found = pairs[torch.searchsorted(pairs, wanted).clamp(max=len(pairs) - 1)] == wanted
    pos_idx = (found & (topk_items >= 0)).int()
    return torch.cat((pos_idx, pos_len), dim=1)


class GenRecCollector(Collector):
    """RecBole's Collector plus a path for models that output top-K item lists instead of scores."""

    def eval_topk_collect(self, topk_items, positive_u, positive_i, n_items):
        """topk_items: long [B, k], -1 where a model produced fewer than k valid items."""
        for key in ("rec.score", "rec.meanrank"):
            if self.register.need(key):
                raise ValueError(
                    f"Metrics that need full score vectors ({key}) are not defined for generative models, which "
                    f"output ranked item lists: use top-K metrics (Recall, NDCG, Hit, MRR, Precision, MAP)."
                )
        items = topk_items.clamp(min=0)  # item 0 is padding: never a positive
        if self.register.need("rec.items"):
            self.data_struct.update_tensor("rec.items", items)
        if self.register.need("rec.topk"):
            self.data_struct.update_tensor("rec.topk", topk_hits(topk_items, positive_u, positive_i, n_items))

    def get_data_struct(self):
        # RecBole calls .cpu() on every entry, which crashes on ints and Counters (ItemCoverage, GiniIndex, ...).
        for key, value in self.data_struct._data_dict.items():
            if isinstance(value, torch.Tensor):
                self.data_struct._data_dict[key] = value.cpu()
        import copy

        returned_struct = copy.deepcopy(self.data_struct)
        for key in ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label"):
            self.data_struct._data_dict.pop(key, None)
        return returned_struct


# `valid_metric` may score a subset of the validation users: `inset_ndcg@10` (users whose target occurs in the
# training split) or `cold_ndcg@10` (the others), as ColdStartTally computes them.
SUBSET_PREFIXES = ("inset_", "cold_")


class ColdStartTally:
    """Cold-start evaluation, available to every model: test users whose target item never occurs in the training
    split ("cold") are scored apart from the others ("in-set"), by RecBole's own metric classes on the matching
    rows of `rec.topk`, and the distinct cold items that reach any top-K list are counted.

    Needs `train_item_mask` (bool [n_items + 1]) on the evaluated dataset, set by `data.mark_training_items`."""

    # Metrics computable from a subset of rows: those that read nothing but `rec.topk`.
    ROW_METRIC_NEEDS = {"rec.topk"}

    def __init__(self, train_item_mask, device):
        self.cold_item = torch.as_tensor(~np.asarray(train_item_mask, dtype=bool), device=device)
        self.cold_item[0] = False  # padding
        self.cold_rows = []
        self.ranked_cold = torch.zeros_like(self.cold_item)

    @classmethod
    def for_dataset(cls, dataset, device):
        mask = getattr(dataset, "train_item_mask", None)
        return None if mask is None else cls(mask, device)

    def add_batch(self, n_rows, topk_items, positive_u, positive_i):
        """topk_items long [B, k] (-1 = no item); positive_u/i: the batch's (row, target item) pairs. Scatters
        only (no boolean indexing), so evaluation keeps running on the device without a host sync per batch."""
        cold_targets = torch.zeros(n_rows, dtype=torch.long, device=positive_u.device)
        cold_targets.index_add_(0, positive_u, self.cold_item[positive_i].long())
        self.cold_rows.append(cold_targets > 0)  # a user with a cold target is a cold user
        self.ranked_cold[topk_items.clamp(min=0).flatten()] = True  # -1 lands on the padding item, never cold

    def gather(self, n_users):
        """Several processes: every rank's users and the cold items any rank ranked (distributed.py)."""
        rows = torch.cat(self.cold_rows) if self.cold_rows else torch.zeros(0, dtype=torch.bool)
        self.cold_rows = [distributed.gather_user_rows(rows, n_users)]
        self.ranked_cold = distributed.any_rank(self.ranked_cold)

    def result(self, evaluator, data_struct, max_k):
        cold_rows = torch.cat(self.cold_rows).cpu() if self.cold_rows else torch.zeros(0, dtype=torch.bool)
        result = {"cold_users": int(cold_rows.sum()), "inset_users": int((~cold_rows).sum())}
        topk = data_struct.get("rec.topk")
        for name, rows in (("cold", cold_rows), ("inset", ~cold_rows)):
            if not rows.any():
                continue
            subset = DataStruct()
            subset.set("rec.topk", topk[rows])
            for metric in evaluator.metric_class.values():
                if set(metric.metric_need) <= self.ROW_METRIC_NEEDS:
                    result.update({f"{name}_{key}": float(value) for key, value in metric.calculate_metric(subset).items()})
        result["cold_items"] = int(self.cold_item.sum())
        result[f"cold_items_in_top{max_k}"] = int((self.ranked_cold & self.cold_item).sum())
        return result


class TimeBudget:
    """`train_time_budget: SECONDS`: no new training epoch starts once that many seconds have passed since `fit`
    began (validation included); the first epoch always runs. `run` returns RecBole's `fit` result, or the best
    validation so far when the budget stops it, and makes sure a checkpoint exists (the last model when no
    validation has happened yet). With a `resume_file` the stop is a pause: the run is not tested and the same
    command trains on from the next epoch. Shared by the plugin trainer and the stock RecBole reference run."""

    class Reached(Exception):
        pass

    def __init__(self, seconds):
        self.seconds = None if seconds is None else float(seconds)
        self.deadline = None
        self.reached = False

    def check(self, epochs_done):
        over = self.deadline is not None and epochs_done > 0 and time() > self.deadline
        if distributed.from_rank_zero(over):  # several processes stop at the same epoch (rank 0's clock)
            raise TimeBudget.Reached()

    def run(self, trainer, fit, saved, verbose=True):
        self.deadline = time() + self.seconds if self.seconds is not None else None
        try:
            return fit()
        except TimeBudget.Reached:
            self.reached = True
            if getattr(trainer, "resume_file", None):
                trainer.logger.info(f"train_time_budget ({self.seconds:g} s) reached: paused after "
                                    f"{trainer.epochs_trained} of {trainer.epochs} epochs; the same command trains on "
                                    f"from {trainer.resume_file}.")
            else:
                trainer.logger.info(f"train_time_budget ({self.seconds:g} s) reached; keeping the best model so far.")
            if saved and not os.path.isfile(trainer.saved_model_file):
                trainer._save_checkpoint(trainer.start_epoch, verbose=verbose)
            return trainer.best_valid_score, trainer.best_valid_result


def unique_checkpoint_file(config):
    """RecBole names a checkpoint by model and second: two runs started in the same second (a script, a scheduler,
    Ray trials on one host) would write, and reload for their test, one file. A random suffix gives each its own."""
    name = f"{config['model']}-{get_local_time()}-{uuid.uuid4().hex[:8]}.pth"
    return os.path.join(config["checkpoint_dir"], name)


# Settings that may differ between a run and its resumed continuation: where files go, what is shown and how long
# one run may train before it pauses.
RESUME_FREE_KEYS = ("resume_file", "state", "show_progress", "checkpoint_dir", "cache_dir", "device", "gpu_id",
                    "use_gpu", "local_rank", "log_wandb", "wandb_project", "threads", "train_time_budget")


def config_fingerprint(config):
    """What a resumed run must share with the run that wrote its state: every setting except RESUME_FREE_KEYS."""
    values = {key: value for key, value in config.final_config_dict.items() if key not in RESUME_FREE_KEYS}
    return json.dumps(values, sort_keys=True, default=str)


def _rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _bf16_autocast(loss_func, device_type):
    """`loss_func` under bf16 autocast on `device_type`; it runs inside RecBole's own autocast region (disabled
    unless `enable_amp`), and the inner region is the one that applies."""

    def wrapped(interaction):
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            return loss_func(interaction)

    return wrapped


class GenRecTrainer(Trainer):
    """RecBole's Trainer with: the shared evaluator above, a warm-up + decay learning-rate schedule
    (`lr_scheduler`: none | constant | cosine | inverse_sqrt | linear; `warmup_steps`, or `warmup_ratio` of all optimiser
    steps, which overrides it when set; `warmup_shape`: linear ramp or constant), a clear error on a diverging loss,
    checkpoint loading that works on torch >= 2.6, and wall-clock timings of training and evaluation.

    Opt-in speed keys (off by default, so a plugin run is stock RecBole's training bit for bit):
    - `device_batches: True`: the training split's history, length, target and user id are moved to the device once
      and batched by a shuffled index (`data/device_batches.py`), without RecBole's per-batch collate; the epoch's
      loss is summed on the device (one host sync per epoch instead of one per step; a diverging loss is reported at
      the end of its epoch). Same batches, same order as RecBole's loader.
    - `mixed_precision: bf16`: the loss is computed under `torch.autocast(<device>, bfloat16)`, on a GPU for speed,
      on a CPU for a rehearsal of the GPU run's code path (benchmarks/gpu_suite.py --rehearse; slower there).
    - `train_time_budget: SECONDS`: no new epoch starts after that many seconds of `fit`; the best checkpoint so
      far is kept (`stopped_by_time_budget` is then True). For benchmarks on machines lent for a fixed time.
    Training time excludes validation; the device batches' one-time copy counts as training time."""

    def __init__(self, config, model):
        # RecBole's ensure_dir checks then creates: two ranks starting together race on it (FileExistsError).
        os.makedirs(config["checkpoint_dir"], exist_ok=True)
        super().__init__(config, model)
        self.eval_collector = GenRecCollector(config)
        self.scheduler = None
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self.epochs_trained = 0
        self._epoch = 0
        self.last_cold_start = None
        self._validating = False  # True inside _valid_epoch: evaluate() then ranks with `selection_topk` if any
        self.device_batches = bool(config["device_batches"])
        self._batches = None
        precision = config["mixed_precision"] or "none"  # validated by GenRecConfig
        self.bf16 = precision == "bf16"
        self.time_budget = TimeBudget(config["train_time_budget"])
        self.resume_file = config["resume_file"]
        self.best_epoch = None
        self._train_data = None
        # One name per run; several processes load the one rank 0 writes.
        self.saved_model_file = distributed.from_rank_zero(unique_checkpoint_file(config))

    # ---- training -------------------------------------------------------------------------------------------
    def _build_scheduler(self, steps_per_epoch):
        """Multiplier of the learning rate after each optimiser step. Warm-up: `warmup_steps`, or, when
        `warmup_ratio` is set, ceil(ratio x all steps of the `epochs` budget) as the HF Trainer computes it
        (LETTER-TIGER's 0.01). `warmup_shape`: linear (a ramp from lr / warmup to lr) or constant (lr held, T5's
        inverse-sqrt schedule, lr x sqrt(warmup / step) afterwards: the TIGER paper's "0.01 for the first 10k
        steps, then inverse square root decay"). After the warm-up: cosine or linear decay to 0 at the end of the
        budget, inverse-sqrt, or constant (the lr held: HF's constant_with_warmup)."""
        kind = self.config["lr_scheduler"] or "none"  # validated by GenRecConfig
        if kind == "none":
            return None
        total = max(1, self.epochs * steps_per_epoch)
        ratio = self.config["warmup_ratio"]
        if ratio is not None:
            if not 0 <= float(ratio) < 1:
                raise ValueError(f"warmup_ratio must be in [0, 1), got {ratio!r}")
            warmup = math.ceil(float(ratio) * total)
        else:
            warmup = int(self.config["warmup_steps"] or 0)
        constant_warmup = (self.config["warmup_shape"] or "linear") == "constant"

        def factor(step):
            step += 1
            if step <= warmup:
                return 1.0 if constant_warmup else step / warmup
            if kind == "constant":  # HF's constant_with_warmup
                return 1.0
            if kind == "inverse_sqrt":
                return math.sqrt(max(warmup, 1) / step)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            if kind == "cosine":
                return 0.5 * (1.0 + math.cos(math.pi * progress))
            return 1.0 - progress  # linear

        scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        # Step the schedule after every optimiser step, without copying RecBole's training loop.
        self.optimizer.register_step_post_hook(lambda *_: scheduler.step())
        return scheduler

    def _valid_epoch(self, valid_data, show_progress=False):
        self._validating = True
        try:
            return super()._valid_epoch(valid_data, show_progress=show_progress)
        finally:
            self._validating = False

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        if self.scheduler is None:
            self.scheduler = self._build_scheduler(len(train_data))
        self._train_data = train_data
        if self.resume_file and os.path.isfile(self.resume_file) and self._restore_training_state():
            return self.best_valid_score, self.best_valid_result  # that run had finished training
        if self.device_batches and (self._batches is None or self._batches.source is not train_data):
            start = time()
            self._batches = DeviceBatches(train_data, self.device)
            self.train_seconds += time() - start
        fit = partial(super().fit, train_data, valid_data, verbose, saved, show_progress, callback_fn)
        result = self.time_budget.run(self, fit, saved, verbose)
        if self.epochs_trained:  # RecBole's own rule for the best epoch (its "best eval result in epoch" line)
            self.best_epoch = self.epochs_trained - 1 - self.cur_step * max(self.eval_step, 1)
        if self.resume_file:  # a budget stop pauses a resumable run: the same command trains on from here
            self._save_training_state(self.epochs_trained, finished=not self.paused)
        return result

    # ---- resuming -------------------------------------------------------------------------------------------
    # RecBole's checkpoint keeps the best model; a resume file keeps the last epoch's whole state. RecBole creates
    # a new GradScaler in every epoch, so no scaler state outlives an epoch.
    def _save_training_state(self, next_epoch, finished=False):
        if not distributed.is_main_process():
            return
        state = {
            "fingerprint": config_fingerprint(self.config), "next_epoch": next_epoch, "finished": finished,
            "cur_step": self.cur_step, "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result, "best_epoch": self.best_epoch,
            "best_checkpoint": self.saved_model_file, "train_seconds": self.train_seconds,
            "epochs_trained": self.epochs_trained, "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": _rng_state(), "loader_rng": self._train_data.generator.get_state(),
        }
        with atomic_path(self.resume_file) as partial_file:
            torch.save(state, partial_file)

    def _restore_training_state(self):
        """Continue from the resume file; True when its run had finished training (only the test is left)."""
        state = safety.load_checkpoint(self.resume_file, self.device)
        if state["fingerprint"] != config_fingerprint(self.config):
            raise ValueError(f"resume_file {self.resume_file} holds the state of a run with other settings: give "
                             f"this run another resume_file, or delete that file to start afresh.")
        self.model.load_state_dict(state["state_dict"])
        self.model.load_other_parameter(state["other_parameter"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for key in ("cur_step", "best_valid_score", "best_valid_result", "best_epoch", "train_seconds",
                    "epochs_trained"):
            setattr(self, key, state[key])
        self.saved_model_file = state["best_checkpoint"]
        self.start_epoch = state["next_epoch"]
        _set_rng_state(state["rng"])
        self._train_data.generator.set_state(state["loader_rng"])
        self.logger.info(set_color("Resumed", "blue") + f" from {self.resume_file}: " + (
            "training had finished" if state["finished"] else f"epoch {self.start_epoch} is next"))
        return state["finished"]

    @property
    def stopped_by_time_budget(self):
        return self.time_budget.reached

    @property
    def paused(self):
        """Stopped by `train_time_budget` with a `resume_file`: training is not over, the next run continues it."""
        return bool(self.time_budget.reached and self.resume_file)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if self.resume_file and epoch_idx > self.start_epoch:  # the previous epoch and its validation are done
            self._save_training_state(epoch_idx)
        self.time_budget.check(epoch_idx - self.start_epoch)
        self._epoch = epoch_idx
        start = time()
        loss_func = loss_func or self.model.calculate_loss
        if self.bf16:
            loss_func = _bf16_autocast(loss_func, self.device.type)
        if self._batches is not None and self._batches.source is train_data:
            loss = self._train_device_epoch(epoch_idx, loss_func, show_progress)
        else:
            loss = super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        self.train_seconds += time() - start
        self.epochs_trained = epoch_idx + 1
        return loss

    def _train_device_epoch(self, epoch_idx, loss_func, show_progress):
        """RecBole's training step over DeviceBatches, with the loss summed on the device (no per-step sync)."""
        self.model.train()
        batches = self._batches
        if show_progress:
            batches = progress(batches, total=len(batches), ncols=100, desc=set_color(f"Train {epoch_idx:>5}", "pink"))
        scaler = torch.amp.GradScaler(enabled=self.enable_scaler)
        amp = torch.autocast(device_type=self.device.type) if self.enable_amp else nullcontext()
        total, parts = None, False
        self._batches.set_epoch(epoch_idx)
        for interaction in batches:
            self.optimizer.zero_grad()
            sync_loss = self._ddp_step_hooks()
            with amp:
                losses = loss_func(interaction)
            parts = isinstance(losses, tuple)
            loss = sum(losses) if parts else losses
            step = torch.stack([part.detach().float() for part in losses]) if parts else loss.detach().float()
            total = step if total is None else total + step
            scaler.scale(loss + sync_loss).backward()
            if self.clip_grad_norm:
                clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            scaler.step(self.optimizer)
            scaler.update()
        self._check_nan(total.sum())
        return tuple(total.tolist()) if parts else total.item()

    def _ddp_step_hooks(self):
        """RecBole's per-step DDP set-up (its `_train_epoch` does the same): the gradient all-reduce hooks, and a
        zero loss term that touches every parameter so that each one is reduced."""
        if self.config["single_spec"]:
            return 0
        self.set_reduce_hook()
        return self.sync_grad_loss()

    def _check_nan(self, loss):
        if not torch.isfinite(loss):
            raise ValueError(
                f"Training loss diverged ({loss.item()}) in epoch {self._epoch}: lower learning_rate (now "
                f"{self.learning_rate}), set clip_grad_norm (e.g. {{max_norm: 1.0}}) or a warm-up (warmup_steps)."
            )

    def resume_checkpoint(self, resume_file):
        checkpoint = safety.load_checkpoint(str(resume_file), self.device)
        self.saved_model_file = str(resume_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        # RecBole writes on every machine's local rank 0: two machines on one shared file system would write the
        # same file at once. Global rank 0 writes; the others get the weights by broadcast (evaluate).
        # Written to a temporary file and moved into place: a reader never sees a half-written checkpoint.
        if distributed.is_main_process():
            saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
            with atomic_path(saved_model_file) as partial:
                super()._save_checkpoint(epoch, verbose=False, saved_model_file=partial, **kwargs)
            if verbose:
                self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    # ---- evaluation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            checkpoint_file = model_file or self.saved_model_file
            # Several processes, our own checkpoint: only global rank 0 wrote it (perhaps on another machine's disk),
            # so rank 0 loads it and broadcasts the weights. A file the user names is read by every rank.
            from_rank_zero = distributed.active() and model_file is None
            other_parameter = None
            if distributed.is_main_process() or not from_rank_zero:
                checkpoint = safety.load_checkpoint(checkpoint_file, self.device)
                self.model.load_state_dict(checkpoint["state_dict"])
                other_parameter = checkpoint.get("other_parameter")
            if from_rank_zero:
                distributed.broadcast_state(self.model)
                other_parameter = distributed.from_rank_zero(other_parameter)
            self.model.load_other_parameter(other_parameter)
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        if not isinstance(eval_data, FullSortEvalDataLoader):  # sampled evaluation of classic models
            return super().evaluate(eval_data, load_best_model=False, show_progress=show_progress)

        start = time()
        self.model.eval()
        if self.item_tensor is None:
            self.item_tensor = eval_data._dataset.get_item_feature().to(self.device)
        self.tot_item_num = eval_data._dataset.item_num
        generative = hasattr(self.model, "generate_topk")
        # Model selection ranks as the method's official code selects (GenerativeRecommender.selection_topk).
        rank = (self.model.selection_topk if self._validating else self.model.generate_topk) if generative else None
        max_k = max(self.config["topk"])
        batches = (
            progress(eval_data, total=len(eval_data), ncols=100, desc=set_color("Evaluate   ", "pink"))
            if show_progress else eval_data
        )
        cold_start = ColdStartTally.for_dataset(eval_data._dataset, self.device) if self.config["cold_start_eval"] else None
        for batched_data in batches:
            interaction, _, positive_u, positive_i = batched_data
            if generative:
                # Only the history reaches the model's generator; RecBole's batch also carries the target item,
                # which generate_topk must not read (tests/test_leakage.py checks it).
                topk_items, _ = rank(interaction.to(self.device), max_k)
                positive_u, positive_i = positive_u.to(self.device), positive_i.to(self.device)
                self.eval_collector.eval_topk_collect(topk_items, positive_u, positive_i, self.tot_item_num)
            else:
                interaction, scores, positive_u, positive_i = self._full_sort_batch_eval(batched_data)
                self.eval_collector.eval_batch_collect(scores, interaction, positive_u, positive_i)
                topk_items = scores.topk(max_k, dim=-1).indices if cold_start else None  # as the collector ranks
            if cold_start:
                cold_start.add_batch(len(interaction), topk_items, positive_u.to(self.device), positive_i.to(self.device))
        self.eval_collector.model_collect(self.model)
        data_struct = self.eval_collector.get_data_struct()
        # Several processes: each ranked its shard of the users; the metrics are computed once, over all of them.
        rank_users = distributed.shard_size(eval_data.sample_size, distributed.rank(), distributed.world_size())
        self.last_eval_users_per_rank = distributed.per_rank(rank_users)
        n_users = sum(self.last_eval_users_per_rank)
        data_struct = distributed.gather_eval_struct(data_struct, n_users)
        if cold_start:
            cold_start.gather(n_users)
        result = self.evaluator.evaluate(data_struct)
        self.last_cold_start = cold_start.result(self.evaluator, data_struct, max_k) if cold_start else None
        if self.last_cold_start:
            self.logger.info(set_color("cold-start", "yellow") + ": " + dict2str(self.last_cold_start))
            if self._validating and self.valid_metric.startswith(SUBSET_PREFIXES):  # e.g. inset_ndcg@10
                result.update({key: value for key, value in self.last_cold_start.items()
                               if key.startswith(SUBSET_PREFIXES)})
        self.last_eval_seconds = time() - start
        self.last_eval_users = n_users
        self.eval_seconds += self.last_eval_seconds
        return result
