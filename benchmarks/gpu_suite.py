r"""The GPU suite (issue 16): one command for a GPU host lent for minutes, without warning or network.

    python benchmarks/gpu_suite.py --prefit --models=RPG  # here, before: RPG's OPQ codes, for the carry
    bash benchmarks/gpu_suite.sh                 # on the GPU host, from the checkout root (offline)
    bash benchmarks/gpu_suite.sh --rehearse      # here, on a CPU: the same code paths on the test fixture

SASRec (CE loss, issue 3's reference protocol), TIGER, RPG, LETTER and LIGER, in this order, on amazon-beauty with
the papers' settings (`properties/model/<Model>.yaml`), each under its own share of the suite's wall time
(`--budget`, 540 s: the whole suite inside 9 minutes, the lent machine's commands stop at 10). Each model's row is
written to `<out>/gpu-suite.csv` and `.md` the moment it finishes, so a suite cut short keeps what it finished; a model
that fails gets a row with its error and the suite goes on. Per model: test Recall/NDCG@5/10, whether the time budget
stopped training, seconds per stage, training sequences/s, test users/s, peak GPU memory, the GPU and the versions.

How each model's minutes are spent (the `settings` column lists every change to the model's yaml):
- its budget = the suite's time left x its share / the shares of the models left (SHARES); training gets the budget
  less what data, text and tokenizer took and less RESERVE of it (the epoch in flight when the budget runs out, the
  last validation, the test evaluation): the trainer's `train_time_budget` (no new epoch after it, best checkpoint
  kept); the first epoch always runs;
- the trainer's `device_batches` (the training split on the GPU once, batched by index, the loss summed on the device:
  one host sync per epoch, none per batch) and `mixed_precision: bf16` (autocast); TF32 matrix products elsewhere;
- batch size: GPU_BATCH (2,048) sequences instead of the papers' 256-1,024. Estimated, not measured: a TIGER step
  of 256 rows (4+4 layers, d_model 128, about 84 tokens a row) is about 0.6 TFLOP, a few milliseconds on an H200,
  about what launching its several hundred kernels costs; at 2,048 rows the arithmetic dominates, so the larger batch
  buys a few times the sequences per second. The learning rate follows Adam's square-root rule (lr x sqrt(2048 /
  batch), Malladi et al., NeurIPS 2022), capped at 0.01, the largest any of these papers trains with (RPG's, which
  keeps it); SASRec's protocol batch is 2,048 already;
- fewer epochs (SLOT): a budget-stopped cosine schedule would never decay, so each model's schedule is compressed
  into the epochs the slot can hold, with its warm-up kept as the same share of all steps; validation every 5 epochs;
- evaluation in batches of thousands of users (all 22,363 test users in 1-22 batches; LIGER's 100 beams take 1,024);
- the tokenizers' fits shortened (RQ-VAE 300 epochs instead of 3,000 / 8,000, LETTER's 200 instead of 20,000 and its
  CF SASRec 20 epochs instead of 50): fitted inside the slot, the papers' fits alone would outlast it. With
  `--prefit` (below) the papers' fits could be kept (the SLOT tokenizer entries dropped), at the CPU time they take
  here (LETTER's 20,000 epochs: hours).
The estimates behind SLOT (epochs, shares) are not measured on a GPU yet: a first run's rows (epochs reached,
whether the budget stopped training) are what to tune them by.

`--prefit` (here, on a CPU, before a GPU session; no time limit) runs models up to their first training batch with
the suite's exact settings (`dry_run_recbole_genrec`), so their semantic IDs (and LETTER's CF embeddings) land in the
suite's cache (`cache/gpu-suite`), and packs that cache into PREFIT_ARCHIVE, carried beside `.whl/site.tar.xz` (the
packages device_wheels.sh packs). The suite unpacks it before its first model; those tokenizer stages are then cache
hits (their keys do not depend on the device). Worth it for RPG (`--prefit --models=RPG`): faiss's OPQ fit (32 x 256
codes) runs on the CPU on the lent image too (no faiss-gpu there); here, on amazon-beauty with 2 faiss threads on
CPU-2's shared cores (load average 10-15), it did not finish in 10 minutes, and took 162 s with one OPQ and one PQ
iteration (of 50 and 25). The RQ-VAE fits (TIGER, LIGER, LETTER) are the GPU's: here TIGER's ran at 0.1 epochs/s
(2 threads, load average 5-10), its 300 epochs about 45 minutes.

`--rehearse` runs the same code paths on the CPU (bf16 autocast on the CPU, device batches, the budgets, the row
writing) on the test fixture (tests/fixtures/tiny-beauty) with tiny models and a 1-second suite budget (every model
trains one epoch of two and is marked budget-stopped); tests/test_gpu_suite.py runs it. Other `--key=value`
options are config overrides for every model (`--cache_dir=...`).
"""
import argparse
import datetime
import math
import os
import platform
import shlex
import sys
import time
import traceback

from common import ROOT
from run_benchmark import SASREC_PROTOCOL, measured_row

MODELS = ("SASRec", "TIGER", "RPG", "LETTER", "LIGER")
# Shares of the suite's wall time: the encoder-decoders' beam-search validation and LETTER's and LIGER's tokenizer
# fits make them the longest; SASRec early-stops within a minute.
SHARES = {"SASRec": 0.12, "TIGER": 0.22, "RPG": 0.16, "LETTER": 0.25, "LIGER": 0.25}
RESERVE = 0.25
GPU_BATCH = 2048
LR_CAP = 0.01
# What the slot changes in each model's yaml. Warm-up ratios: the papers' warm-up steps over their whole schedule on
# amazon-beauty (131,413 training prefixes; RPG trains each of the 22,363 users' sequences once per epoch).
SLOT = {
    "SASRec": {"eval_batch_size": 32768},
    "TIGER": {"epochs": 30, "eval_step": 5, "warmup_ratio": 0.01,  # 1,000 of 200 x 514 steps
              "eval_batch_size": 4096, "tokenizer_params": {"epochs": 300}},
    "RPG": {"epochs": 40, "eval_step": 5, "warmup_ratio": 0.57,  # 10,000 of 200 x 88 steps
            "eval_batch_size": 4096},
    "LETTER": {"epochs": 30, "eval_step": 5,  # warmup_ratio 0.01: its yaml's
               "eval_batch_size": 4096, "cf_params": {"epochs": 20},
               "tokenizer_params": {"epochs": 200, "collision_check_interval": 100}},
    "LIGER": {"epochs": 30, "eval_step": 5, "warmup_ratio": 0.05,  # 10,000 of 390 x 514 steps
              "eval_batch_size": 1024, "tokenizer_params": {"epochs": 300}},
}
# --rehearse: the fixture, two epochs, and models shrunk to it (same architectures and tokenizers as the papers').
TINY_T5 = {"d_model": 32, "num_heads": 2, "d_kv": 16, "d_ff": 64, "num_encoder_layers": 1, "num_decoder_layers": 1,
           "beam_size": 10}
TINY_RQVAE = {"codebook_size": 8, "latent_dim": 8, "hidden_dims": [64, 32], "epochs": 20, "batch_size": 512}
REHEARSAL = {
    "SASRec": {"hidden_size": 32, "inner_size": 64},
    "TIGER": {**TINY_T5, "tokenizer_params": TINY_RQVAE},
    "RPG": {"d_model": 32, "d_ff": 64, "num_layers": 1,
            "tokenizer_params": {"num_digits": 4, "codebook_size": 16, "pca_whiten_dim": 16, "opq_niter": 5}},
    "LETTER": {**TINY_T5, "cf_params": {"hidden_size": 8, "inner_size": 16, "epochs": 1},
               "tokenizer_params": {**TINY_RQVAE, "n_clusters": 2, "collision_check_interval": 10}},
    "LIGER": {**TINY_T5, "text_mlp_hidden": [64], "liger_candidates": 5, "tokenizer_params": TINY_RQVAE},
}
REHEARSAL_COMMON = {"epochs": 2, "eval_step": 1, "MAX_ITEM_LIST_LENGTH": 10,
                    "sid_collapse": "warn"}  # 287 items on 8-code levels collide
FIXTURE_CONFIG = os.path.join(ROOT, "tests", "fixtures", "tiny-beauty.yaml")
SUITE_CACHE = os.path.join(ROOT, "cache", "gpu-suite")  # the suite's own cache folder, all of it packed by --prefit
PREFIT_ARCHIVE = os.path.join(ROOT, ".whl", "gpu-suite-cache.tar.xz")  # rehearsing: in the output folder
COLUMNS = ["model", "runner", "test_recall@5", "test_recall@10", "test_ndcg@5", "test_ndcg@10", "test_cold_recall@10",
           "valid_score", "epochs", "stopped_by_time_budget", "budget_seconds", "train_time_budget",
           "prepare_seconds", "text_seconds", "tokenizer_seconds", "train_seconds", "test_eval_seconds",
           "wall_seconds", "train_seq_per_s", "eval_users_per_s", "peak_gpu_memory_mb", "parameters", "gpu",
           "versions", "settings", "error"]


def parse_args(argv):
    from recbole_genrec.cli import parse_args as parse_overrides

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rehearse", action="store_true", help="the CPU rehearsal on the test fixture")
    parser.add_argument("--prefit", action="store_true", help="fit the tokenizers here and pack their cache")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, a subset of the suite's")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole suite from the start of gpu_suite.sh (default 540; 1 rehearsing)")
    parser.add_argument("--out", default=None, help="output folder (default $OUT, else results/gpu-suite)")
    args, rest = parser.parse_known_args(argv)
    _, args.overrides = parse_overrides(rest)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        raise ValueError(f"--models: {unknown} not in the suite ({', '.join(MODELS)}).")
    args.budget = args.budget if args.budget is not None else (1.0 if args.rehearse else 540.0)
    args.out = args.out or os.environ.get("OUT") or os.path.join("results", "gpu-suite")
    args.dataset = "tiny-beauty" if args.rehearse else "amazon-beauty"
    args.config_files = [FIXTURE_CONFIG] if args.rehearse else None
    args.cache_dir = args.overrides.get("cache_dir") or (os.path.join(args.out, "cache") if args.rehearse else SUITE_CACHE)
    args.archive = os.path.join(args.out, "gpu-suite-cache.tar.xz") if args.rehearse else PREFIT_ARCHIVE
    return args


def merged(base, *layers):
    """`base` updated by each layer in turn; dict values (tokenizer_params, cf_params) merged key by key."""
    result = dict(base)
    for layer in layers:
        for key, value in layer.items():
            result[key] = {**result[key], **value} if isinstance(value, dict) and isinstance(result.get(key), dict) \
                else value
    return result


def model_settings(model, args):
    """(config dict, the changes to the model's yaml as text) for one model of the suite."""
    from recbole_genrec.config import GenRecConfig

    settings = {**(SASREC_PROTOCOL if model == "SASRec" else {}), "device_batches": True, "mixed_precision": "bf16",
                "cache_dir": args.cache_dir}
    if args.rehearse:
        settings["checkpoint_dir"] = os.path.join(os.path.abspath(args.out), "saved")
    papers = GenRecConfig(model=model, dataset=args.dataset, config_file_list=args.config_files, config_dict=settings)
    changes = merged(SLOT[model], REHEARSAL_COMMON, REHEARSAL[model]) if args.rehearse else SLOT[model]
    changes = merged({key: papers[key] for key in changes}, changes, args.overrides)
    batch, lr = changes.get("train_batch_size", papers["train_batch_size"]), changes.get("learning_rate",
                                                                                         papers["learning_rate"])
    if batch < GPU_BATCH:  # Adam's square-root rule, capped (module docstring)
        changes.update(train_batch_size=GPU_BATCH, learning_rate=min(lr * math.sqrt(GPU_BATCH / batch), max(lr, LR_CAP)))
    return {**settings, **changes}, describe_changes(papers, changes)


def describe_changes(papers, changes):
    """'epochs 200->30, tokenizer_params.epochs 3000->300, ...' for the keys whose value differs from the yaml's."""
    parts = []
    for key, value in changes.items():
        before = papers[key]
        if isinstance(value, dict) and isinstance(before, dict):
            parts += [f"{key}.{k} {before.get(k)}->{v}" for k, v in value.items() if before.get(k) != v]
        elif before != value:
            parts.append(f"{key} {_short(before)}->{_short(value)}")
    return ", ".join(parts)


def _short(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def versions():
    import faiss
    import numpy
    import pandas
    import recbole
    import torch

    from recbole_genrec.tokenization.faiss_index import gpu_available

    cuda = f" (CUDA {torch.version.cuda})" if torch.version.cuda else ""
    return (f"Python {platform.python_version()}, torch {torch.__version__}{cuda}, recbole {recbole.__version__}, "
            f"faiss {faiss.__version__} ({'GPU' if gpu_available() else 'CPU'} index), numpy {numpy.__version__}, "
            f"pandas {pandas.__version__}")


def run_model(model, budget, args, context):
    """Train and test one model inside `budget` seconds of wall time; its row."""
    from recbole_genrec.quick_start import run_recbole_genrec
    from recbole_genrec.representation.text import encoder_name

    start = time.time()
    row = {"model": model, "dataset": args.dataset, "budget_seconds": budget, **context}
    prepared = {}

    def on_prepared(config, dataset):  # data, text and tokenizer are done: training gets what is left
        prepared["seconds"] = time.time() - start
        config["train_time_budget"] = max(0.0, budget * (1 - RESERVE) - prepared["seconds"])
        prepared["train_time_budget"] = config["train_time_budget"]
        prepared["text_encoder"] = encoder_name(config["text_encoder"]) if config["text_encoder"] else None

    try:
        config_dict, row["settings"] = model_settings(model, args)
        run = run_recbole_genrec(model, args.dataset, config_file_list=args.config_files, config_dict=config_dict,
                                 on_prepared=on_prepared)
        row.update(measured_row(run, model, context["runner"], time.time() - start, context))
    except Exception as error:  # a failed model must not cost the others their minutes
        traceback.print_exc()
        row.update(error=f"{type(error).__name__}: {error}"[:500], wall_seconds=time.time() - start)
        release_gpu_memory()
    row.update(prepare_seconds=prepared.get("seconds"), train_time_budget=prepared.get("train_time_budget"),
               text_encoder=prepared.get("text_encoder"))
    return row


def release_gpu_memory():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def write_rows(rows, args):
    """The table so far, as CSV and Markdown (rewritten whole after every model)."""
    from recbole_genrec.results import format_markdown, write_csv

    os.makedirs(args.out, exist_ok=True)
    write_csv(rows, os.path.join(args.out, "gpu-suite.csv"))
    # GPU and versions are the suite's (in the heading); the CSV keeps them on every row
    columns = [c for c in COLUMNS if c not in ("gpu", "versions") and any(row.get(c) is not None for row in rows)]
    first = rows[0]
    lines = [f"# GPU suite{' rehearsal' if args.rehearse else ''} on {args.dataset}", "",
             f"{first['date']}, {first['hardware']}", "", f"Versions: {first['versions']}", "",
             f"Command: `{first['command']}` (suite budget {args.budget:g} s)", "",
             format_markdown(rows, columns)]
    with open(os.path.join(args.out, "gpu-suite.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")


def prefit(args):
    """Each model up to its first training batch with the suite's settings (the caches fill), then the suite's cache
    folder packed into the archive the suite unpacks."""
    import tarfile

    from recbole_genrec.quick_start import dry_run_recbole_genrec

    for model in args.models:
        print(f"[gpu-suite] prefit {model}", flush=True)
        settings, _ = model_settings(model, args)
        dry_run_recbole_genrec(model, args.dataset, config_file_list=args.config_files, config_dict=settings)
    os.makedirs(os.path.dirname(os.path.abspath(args.archive)), exist_ok=True)
    with tarfile.open(args.archive, "w:xz") as archive:
        archive.add(args.cache_dir, arcname=".")
    print(f"[gpu-suite] {args.cache_dir} packed into {args.archive} ({os.path.getsize(args.archive) / 1e6:.2f} MB)")


def unpack_prefit(args):
    """The caches `--prefit` packed, into the suite's cache folder (files already there are kept)."""
    import tarfile

    if not os.path.isfile(args.archive):
        print(f"[gpu-suite] no {args.archive}: every tokenizer is fitted here, inside its model's budget", flush=True)
        return
    with tarfile.open(args.archive) as archive:
        members = [m for m in archive.getmembers() if not os.path.exists(os.path.join(args.cache_dir, m.name))]
        archive.extractall(args.cache_dir, members=members, filter="data")
    print(f"[gpu-suite] {len(members)} cache entries unpacked from {args.archive} into {args.cache_dir}", flush=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.prefit:
        return prefit(args)
    start = float(os.environ.get("GPU_SUITE_START") or time.time())  # gpu_suite.sh's start: the install counts
    import torch

    from recbole_genrec.measure import hardware

    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 for what runs outside bf16 autocast
        # A warning (once per code site) wherever the host waits for the GPU: the log shows every sync site, and
        # so whether any sits inside the per-batch training step.
        torch.cuda.set_sync_debug_mode("warn")
    context = {"runner": "plugin, device batches, bf16 autocast" + (", TF32" if torch.cuda.is_available() else ""),
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU",
               "hardware": hardware(), "versions": versions(), "date": datetime.date.today().isoformat(),
               "command": "bash benchmarks/gpu_suite.sh " + " ".join(shlex.quote(a) for a in argv)}
    unpack_prefit(args)
    rows = []
    for position, model in enumerate(args.models):
        left = max(0.0, start + args.budget - time.time())
        budget = left * SHARES[model] / sum(SHARES[m] for m in args.models[position:])
        print(f"[gpu-suite] {model}: {budget:.0f} s of the {left:.0f} s left", flush=True)
        rows.append(run_model(model, budget, args, context))
        write_rows(rows, args)
        print(f"[gpu-suite] {model} done in {rows[-1]['wall_seconds']:.0f} s; rows in {args.out}", flush=True)
    failed = [row["model"] for row in rows if row.get("error")]
    if failed:
        print(f"[gpu-suite] failed: {', '.join(failed)} (their errors are in the table and above)", flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(1 if any(row.get("error") for row in main() or []) else 0)
