r"""Each generative method beside an implementation nobody here wrote: the official code's model, or cornac's.

    python benchmarks/official_parity.py --models=LIGER,EAGER,ColaRec --implementations=recbole_genrec,module-swap \
        --official_python=/path/to/venv-official/bin/python --official LIGER=/path/to/liger EAGER=/path/to/EAGER ...
    python benchmarks/official_parity.py --models=TIGER,LETTER,RPG --implementations=recbole_genrec,cornac
    python benchmarks/official_parity.py --summarize

One table, `benchmarks/results/parity.csv` (peers.py's columns plus `official_commit`), one row per (model,
implementation, seed, dataset); rows already in the file are skipped, so an interrupted table resumes where it
stopped. Each row trains with its own `resume_file` under `--work_dir`: a row killed mid-training goes on from its
last epoch, and `--pause_after SECONDS` (the trainer's `train_time_budget`) pauses a row cleanly after that much
training, so rows of many hours (LIGER's and MQL4GRec's official modules on a CPU) fill over several runs.
Implementations:

- `recbole_genrec`: ours, at the parity sizes below.
- `module-swap`: the official repository's model module (its network and, where they can be separated from its
  pipeline, its loss and decoding) trained and tested by OUR pipeline: RecBole's split and loaders, the plugin's
  trainer, our semantic IDs and item features, RecBole's metrics. The adapters live in
  `benchmarks/official_modules/<method>.py` and import the official code from a checkout given by path (nothing of
  it is in this project); each adapter's `PARTS` says which parts are official. A result near ours says the model
  is faithful; a gap localises to the module, since everything else is shared.
- `cornac`: cornac 3.0.1's TIGER, LETTER and RPG in cornac's own pipeline on the same split and IDs (peers.py).

The official code pins its own libraries (LIGER: transformers 4.39.3), so module-swap rows run under
`--official_python`, an environment built from those pins plus this package's dependencies (README, "Independent
checks"). Sizes: peers.py's CPU parity size (ml-100k, history 10, d_model 64, 1 + 1 layers, 8 epochs, beam 20) with
each method's quick-start tokenizer; MQL4GRec runs on amazon-instruments-mm, the shipped dataset with published
text and image codes. Every row is scored by RecBole's Recall and NDCG on the same test users.
"""
import argparse
import csv
import datetime
import importlib
import json
import os
import statistics
import subprocess
import sys
import time

import common

import peers

CSV_PATH = os.path.join(common.ROOT, "benchmarks", "results", "parity.csv")
COLUMNS = peers.COLUMNS + ["commit", "official_commit"]
IMPLEMENTATIONS = ("recbole_genrec", "module-swap", "cornac")
SEQ2SEQ = {"num_heads": 4, "d_kv": 16, "num_encoder_layers": 1, "num_decoder_layers": 1}
# The parity size of each method: peers.py's COMMON protocol and widths, the method's own recipe otherwise, and its
# quick-start tokenizer (properties/quickstart.yaml). LIGER keeps LIGER.yaml's beam of 100 (its hybrid keeps 20).
SETTINGS = {
    **peers.SETTINGS,
    "LIGER": {**{k: v for k, v in peers.COMMON.items() if k != "beam_size"}, **SEQ2SEQ, "tokenizer": "RQKMeans",
              "tokenizer_params": {"num_levels": 3, "codebook_size": 32, "niter": 25, "collision": "append_digit"}},
    "EAGER": {**peers.COMMON, "num_heads": 4, "d_kv": 16, "num_decoder_layers": 1,
              "cf_params": {"hidden_size": 64, "inner_size": 128, "epochs": 3},
              "tokenizer_params": {"branches": 64, "num_levels": 0, "niter": 25, "standardize": False,
                                   "collision": "none"}},
    "ColaRec": {**peers.COMMON, **SEQ2SEQ, "cf_params": {"model": "LightGCN", "embedding_size": 64, "epochs": 5},
                "tokenizer_params": {"branches": 32, "num_levels": 0, "niter": 25, "standardize": False,
                                     "collision": "none", "cluster_size_max": "subtree"}},
    "MQL4GRec": {**peers.COMMON, **SEQ2SEQ},
}
DATASETS = {"MQL4GRec": "amazon-instruments-mm"}
QUICK = {"epochs": 1, "d_model": 32, "d_ff": 64, "num_heads": 2, "d_kv": 16, "warmup_steps": 10, "num_layers": 1}


def settings_for(model, quick=False, overrides=None):
    if model in peers.SETTINGS:
        settings = peers.settings_for(model, quick)
    else:
        settings = json.loads(json.dumps(SETTINGS[model]))
        if quick:
            settings.update({k: v for k, v in QUICK.items() if k in settings or k == "epochs"})
            for key in ("cf_params",):
                if key in settings:
                    settings[key]["epochs"] = 1
    settings.update(overrides or {})
    settings.setdefault("sid_collapse", "warn")
    return settings


def adapter(model):
    """The module-swap adapter of `model` (benchmarks/official_modules/<model>.py)."""
    return importlib.import_module(f"official_modules.{model.lower()}")


def worker(spec):
    """One row in this process: the row's JSON on stdout's last line."""
    import resource

    import torch

    from recbole_genrec import registry

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    start = time.time()
    model, implementation = spec["model"], spec["implementation"]
    settings = {**spec["settings"], **spec.get("resume", {})}
    args = (model, spec["dataset"], settings, spec["seed"], spec.get("data_path"))
    extra = {}
    if implementation == "cornac":
        row = peers.run_cornac(*args)
    else:
        if implementation == "module-swap":
            module = adapter(model)
            swapped, get_model = module.swapped_class(spec["checkout"]), registry.get_model
            registry.get_model = lambda name: swapped if name == model else get_model(name)
            extra["official_commit"] = module.OFFICIAL_COMMIT
        row = peers.run_ours(*args)
    row.update(extra)
    row.setdefault("wall_seconds", time.time() - start)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    row["threads"] = torch.get_num_threads()
    print("PARITY_ROW " + json.dumps(row), flush=True)


def run_row(spec, log_dir, python):
    """The row in a fresh process of `python` (its own peak RSS and libraries); its log goes to `log_dir`."""
    os.makedirs(log_dir, exist_ok=True)
    name = f"{spec['model']}-{spec['implementation']}-{spec['seed']}"
    spec_path = os.path.join(log_dir, name + ".json")
    with open(spec_path, "w") as handle:
        json.dump(spec, handle)
    log_path = os.path.join(log_dir, name + ".log")
    with open(log_path, "w") as log:
        proc = subprocess.run([python, os.path.abspath(__file__), f"--worker={spec_path}"], cwd=common.ROOT,
                              stdout=subprocess.PIPE, stderr=log, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PARITY_ROW ")]
    if proc.returncode or not lines:
        with open(log_path) as handle:
            tail = handle.read()[-3000:]
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    return json.loads(lines[-1][len("PARITY_ROW "):])


def read_rows(path):
    return peers.read_rows([path]) if os.path.exists(path) else []


def append_row(path, row):
    """Appends `row`; a file written with fewer columns is rewritten under the current ones first."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != COLUMNS:
                earlier = list(reader)
                with open(path + ".tmp", "w", newline="") as out:
                    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
                    writer.writeheader()
                    writer.writerows(earlier)
                os.replace(path + ".tmp", path)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({key: row.get(key) for key in COLUMNS})


def summary(rows):
    """Mean ± sample std over seeds per (model, dataset, implementation), as a markdown table."""
    def stat(values):
        values = [float(v) for v in values if v is not None]
        if not values:
            return "-"
        return (f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1
                else f"{values[0]:.4f} (one seed)")

    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["dataset"], row["implementation"]), []).append(row)
    lines = ["| model | dataset | implementation | seeds | R@10 | N@10 | per seed R@10 / N@10 | valid N@10 | train seq/s "
             "| test users/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (model, dataset, implementation), group in sorted(groups.items()):
        group = sorted(group, key=lambda r: int(r["seed"]))
        per_seed = ", ".join(f"{float(r['recall@10']):.4f} / {float(r['ndcg@10']):.4f}" for r in group)
        lines.append(f"| {model} | {dataset} | {implementation} | {len(group)} | "
                     f"{stat([r['recall@10'] for r in group])} | {stat([r['ndcg@10'] for r in group])} | {per_seed} | "
                     f"{stat([r['valid_ndcg@10'] for r in group])} | "
                     f"{statistics.mean(float(r['train_seq_per_s']) for r in group):.0f} | "
                     f"{statistics.mean(float(r['test_users_per_s']) for r in group):.0f} |")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="LIGER,EAGER,ColaRec,MQL4GRec")
    parser.add_argument("--implementations", default="recbole_genrec,module-swap")
    parser.add_argument("--seeds", default="2020,2021,2022")
    parser.add_argument("--official", nargs="*", default=[], metavar="MODEL=PATH",
                        help="the official repository's checkout of each model with a module-swap row")
    parser.add_argument("--official_python", default=sys.executable,
                        help="the Python that runs module-swap rows (the official code's pinned libraries)")
    parser.add_argument("--csv", default=CSV_PATH)
    parser.add_argument("--log_dir", default=os.path.join(common.ROOT, "results", "parity", "logs"))
    parser.add_argument("--work_dir", default=os.path.join(common.ROOT, "results", "parity", "resume"),
                        help="each row's resume file (its last finished epoch)")
    parser.add_argument("--pause_after", type=float, default=None, metavar="SECONDS",
                        help="pause each row after this much training; the same command continues it")
    parser.add_argument("--dataset", default=None, help="one dataset for every model (default: ml-100k; MQL4GRec: "
                                                        "amazon-instruments-mm)")
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny widths, one epoch: a smoke run")
    parser.add_argument("--summarize", action="store_true", help="print the CSV's mean ± std table and exit")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        with open(args.worker) as handle:
            return worker(json.load(handle))
    if args.summarize:
        print(summary(read_rows(args.csv)))
        return None
    models = [m for m in args.models.split(",") if m]
    implementations = [i for i in args.implementations.split(",") if i]
    checkouts = dict(item.split("=", 1) for item in args.official)
    # Every refusal before the first row runs.
    unknown = [m for m in models if m not in SETTINGS]
    if unknown:
        raise SystemExit(f"official_parity.py: no parity settings for {unknown}; known: {sorted(SETTINGS)}.")
    if set(implementations) - set(IMPLEMENTATIONS):
        raise SystemExit(f"official_parity.py: --implementations takes {', '.join(IMPLEMENTATIONS)}.")
    if "module-swap" in implementations:
        missing = [m for m in models if not os.path.isdir(checkouts.get(m, ""))]
        if missing:
            raise SystemExit(f"official_parity.py: module-swap rows need the official checkout of {missing}: "
                             f"--official {' '.join(m + '=PATH' for m in missing)}.")
    if "cornac" in implementations and set(models) - set(peers.SETTINGS):
        raise SystemExit(f"official_parity.py: cornac ships {sorted(peers.SETTINGS)} only.")
    from recbole_genrec.measure import hardware

    done = {(r["model"], r["implementation"], int(r["seed"]), r["dataset"]) for r in read_rows(args.csv)}
    command = "python benchmarks/official_parity.py " + " ".join(
        a for a in argv if not a.startswith("--official_python"))
    for model in models:
        dataset = args.dataset or DATASETS.get(model, "ml-100k")
        settings = settings_for(model, args.quick)
        for seed in (int(s) for s in args.seeds.split(",")):
            for implementation in implementations:
                if (model, implementation, seed, dataset) in done:
                    print(f"{model} {implementation} seed {seed} on {dataset}: in {args.csv}, skipped", flush=True)
                    continue
                resume = {} if implementation == "cornac" else {"resume_file": os.path.join(
                    args.work_dir, f"{model}-{implementation}-{seed}-{dataset}{'-quick' if args.quick else ''}.pth")}
                if resume and args.pause_after is not None:
                    resume["train_time_budget"] = args.pause_after
                spec = {"model": model, "implementation": implementation, "seed": seed, "settings": settings,
                        "dataset": dataset, "data_path": args.data_path, "threads": args.threads,
                        "checkout": checkouts.get(model), "resume": resume}
                python = args.official_python if implementation == "module-swap" else sys.executable
                code = common.commit()  # the code the row runs
                os.makedirs(args.work_dir, exist_ok=True)  # a folder the rows' processes share
                row = run_row(spec, args.log_dir, python)
                if row.get("paused"):
                    print(f"{model} {implementation} seed {seed} on {dataset}: paused after {row['epochs']} of "
                          f"{settings['epochs']} epochs ({row['train_seconds']:.0f} s of training); the same command "
                          f"continues it from {resume['resume_file']}", flush=True)
                    continue
                row.update({"model": model, "implementation": implementation, "seed": seed, "dataset": dataset,
                            "commit": code, "hardware": hardware(), "date": datetime.date.today().isoformat(), "command": command})
                append_row(args.csv, row)
                print(f"{model} {implementation} seed {seed} on {dataset}: R@10 {row['recall@10']:.4f} "
                      f"N@10 {row['ndcg@10']:.4f} | {row['epochs']} epochs | {row['wall_seconds']:.0f} s", flush=True)
    print("\n" + summary([r for r in read_rows(args.csv) if r["model"] in models]))
    return None


if __name__ == "__main__":
    main()
