r"""The leaderboard: every plugin method beside RecBole's classic models, trained to convergence on one split.

    python benchmarks/leaderboard.py --dataset=amazon-beauty
    python benchmarks/leaderboard.py --dataset=ml-100k --models=SASRec,TIGER --seeds=2020
    python benchmarks/leaderboard.py --dataset=mydata --data_path=/data/atomic       # own data, no yaml needed
    python benchmarks/leaderboard.py --dataset=ml-100k --readme                      # also README's headline table
    python benchmarks/leaderboard.py --dataset=ml-100k --summarize --readme          # tables from the CSV, no training
    python benchmarks/leaderboard.py --dataset=ml-100k --models=TIGER,SASRec --trials=8 \
        --tune=TIGER=hyper/TIGER-cpu.hyper,SASRec=hyper/SASRec.hyper                 # tuned rows beside the defaults

Each row is one (model, seed): the model's sizes from `--profile` (default benchmarks/leaderboard.yaml: the shared
protocol, then per-model widths), trained with validation NDCG@10 after every epoch and early stopping, its best
checkpoint tested once, all on RecBole's leave-one-out split and scored by RecBole's metrics through the plugin's
evaluator. Any other `--key=value` overrides every row's config.

Runs survive interruption: each row trains with its own `resume_file` under `--work_dir`, so a row killed
mid-training continues from its last epoch when the command runs again (`--train_time_budget=SECONDS` pauses each
row cleanly after that much training), and rows already in the CSV are skipped.
Finished rows go to `<out>/leaderboard-<dataset>.csv` at once; after every row the summary (mean +- std over
seeds, the papers' figures in their own column) is written as `<out>/leaderboard-<dataset>.md` and drawn as
`<out>/leaderboard-<dataset>.png`. A model whose configuration cannot run on the dataset (MQL4GRec without
published codes) is named with its reason and skipped.

Tuned beside default (`--tune=MODEL=HYPER_FILE,...` with `--trials=N`): each named model is first searched with Ray
Tune over its hyper file, N random trials on the row's own settings (the profile's widths, epoch cap and patience;
ASHA on validation NDCG@10; one trial at a time on `--threads` CPUs), selected on validation only. The search's
table and best configuration are kept as `<out>/tuning-<dataset>-<model>.csv` and `.yaml` (a finished search is not
run again; one interrupted starts again); then the best configuration trains its own rows, `<model> (tuned)`, one per seed, beside the model's
default rows in the same CSV, with the tuned keys in their `tuned` column.
"""
import argparse
import os
import re
import shutil
import statistics
import sys
import time

from common import ROOT, commit

DEFAULT_PROFILE = os.path.join(ROOT, "benchmarks", "leaderboard.yaml")
SEEDS = (2020, 2021, 2022)
SUMMARY_METRICS = ("recall@10", "ndcg@10")
TUNED = "{model} (tuned)"
README_MARK = "<!-- leaderboard:{dataset} -->"
README_END = "<!-- /leaderboard -->"


def profile_models(path):
    """The per_model sections' names, in order: the table's models."""
    import yaml

    with open(path, encoding="utf-8") as handle:
        return list((yaml.safe_load(handle) or {}).get("per_model", {}))


def row_settings(model, seed, args, overrides, tuned=None):
    """A row's configuration: the profile's settings for `model`, the seed, the row's own checkpoint folder and
    resume file, the command line's overrides; with `tuned` (a search's best keys) the tuned row's."""
    from recbole_genrec.cli import load_profile

    folder = os.path.join(args.work_dir, args.dataset, f"{model}{'-tuned' if tuned else ''}-seed{seed}")
    settings = {**load_profile(model, args.profile), **(tuned or {}), "seed": seed, "checkpoint_dir": folder,
                "resume_file": os.path.join(folder, "resume.pth"), **overrides}
    if args.data_path:
        settings["data_path"] = args.data_path
    return settings


def search_settings(model, seed, args, overrides):
    """A search's base configuration: the row's, without its checkpoint folder and resume file (every trial gets
    its own; a shared resume file would mix trials)."""
    settings = row_settings(model, seed, args, overrides)
    for key in ("checkpoint_dir", "resume_file"):
        settings.pop(key)
    return settings


def tuned_settings(model, hyper_file, args, overrides, seed):
    """The tuned keys of `model` (its search's best configuration), from `<out>/tuning-<dataset>-<model>.yaml`; the
    search runs first when that file does not exist. Selection reads validation only."""
    import yaml

    from recbole_genrec.tuning import run_tuning

    base = os.path.join(args.out, f"tuning-{args.dataset}-{model}")
    if not os.path.isfile(base + ".yaml"):
        cpus = args.threads or os.cpu_count()  # one trial at a time, on every CPU the rows use
        result = run_tuning(model, args.dataset, hyper_file, config_dict=search_settings(model, seed, args, overrides),
                            trials=args.trials, search="random", ray_num_cpus=cpus, cpus_per_trial=cpus,
                            max_concurrent=1, tune_dir=os.path.join(args.work_dir, args.dataset, f"tune-{model}"))
        if result.best is None:
            raise SystemExit(f"{model}: every trial of the search failed ({result.results_csv}).")
        os.makedirs(args.out, exist_ok=True)
        shutil.copyfile(result.results_csv, base + ".csv")
        with open(base + ".yaml", "w", encoding="utf-8") as handle:
            yaml.safe_dump(result.best_config, handle, sort_keys=False)
        print(f"{model}: best of {len(result.rows)} trials on validation: {result.best_config}", flush=True)
    with open(base + ".yaml", encoding="utf-8") as handle:
        best = yaml.safe_load(handle)
    return {key: value for key, value in best.items() if key not in ("model", "dataset")}


def table_models(models, rows):
    """The table's rows in order: each model, then its tuned rows where the CSV has them."""
    present = {row["model"] for row in rows}
    return [name for model in models for name in (model, TUNED.format(model=model))
            if name == model or name in present]


def leaderboard_row(model, seed, result, settings, seconds):
    """One CSV row: test and validation metrics, the budget and what the run cost."""
    from recbole_genrec.measure import per_second
    from recbole_genrec.results import flat_metrics

    row = {"model": model, "seed": seed, "dataset": result["dataset"]}
    row.update({f"test_{key}": value for key, value in flat_metrics(result["test_result"]).items()})
    row.update({f"valid_{key}": value for key, value in flat_metrics(result["best_valid_result"]).items()})
    row.update({"best_epoch": result["best_epoch"], "epochs": result["epochs"], "epoch_cap": settings.get("epochs"),
                "patience": settings.get("stopping_step"), "train_seconds": result["train_seconds"],
                "test_users_per_s": per_second(result["test_users"], result["test_eval_seconds"]),
                "parameters": result["parameters"], "wall_seconds": seconds, "commit": commit("recbole_genrec", "properties")})
    return row


def summary_rows(rows, models):
    """Mean +- std over seeds per model (sample std; one seed says so), with the paper's figure where one exists."""
    from recbole_genrec.results import paper_figures

    figures = paper_figures()
    table = []
    for model in models:
        runs = [row for row in rows if row["model"] == model]
        if not runs:
            continue
        line = {"model": model, "seeds": len(runs)}
        for metric in SUMMARY_METRICS:
            values = [float(row[f"test_{metric}"]) for row in runs]
            spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else " (one seed)"
            line[f"test {metric}"] = f"{statistics.mean(values):.4f}{spread}"
        paper = figures.get((model, runs[0]["dataset"]))
        line["paper R@10 / N@10"] = f"{paper[0]:.4f} / {paper[1]:.4f} ({paper[2]})" if paper else "-"
        line["best epoch"] = "/".join(str(row["best_epoch"]) for row in runs)
        line["epochs run (cap)"] = "/".join(str(row["epochs"]) for row in runs) + f" ({runs[0]['epoch_cap']})"
        line["train s (mean)"] = f"{statistics.mean(float(row['train_seconds']) for row in runs):.0f}"
        table.append(line)
    return table


def markdown(table):
    columns = list(table[0]) if table else ["model"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(str(line[c]) for c in columns) + " |" for line in table])


def plot(rows, models, path):
    """Test Recall@10 and NDCG@10 per model: the mean over seeds, each seed a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [m for m in models if any(row["model"] == m for row in rows)]
    fig, axis = plt.subplots(figsize=(max(6.0, 1.1 * len(present) + 2), 4))
    for offset, metric in zip((-0.2, 0.2), SUMMARY_METRICS):
        for position, model in enumerate(present):
            values = [float(row[f"test_{metric}"]) for row in rows if row["model"] == model]
            axis.bar(position + offset, statistics.mean(values), 0.38, color="tab:blue" if offset < 0 else "tab:orange",
                     label=metric if position == 0 else None)
            axis.plot([position + offset] * len(values), values, "k.", markersize=4)
    axis.set_xticks(range(len(present)), present, rotation=20, ha="right")
    axis.set_ylabel("test score (mean over seeds, dots: seeds)")
    axis.set_title(f"{rows[0]['dataset']}: trained to convergence, same split, RecBole's metrics", fontsize=10)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def update_readme(path, dataset, text):
    """Replace the table between `<!-- leaderboard:<dataset> -->` and `<!-- /leaderboard -->` in the README."""
    with open(path, encoding="utf-8") as handle:
        readme = handle.read()
    mark = README_MARK.format(dataset=dataset)
    if mark not in readme:
        raise ValueError(f"{path} has no {mark} ... {README_END} block for the {dataset} table.")
    head, rest = readme.split(mark, 1)
    _, tail = rest.split(README_END, 1)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"{head}{mark}\n{text}\n{README_END}{tail}")


def unrunnable(models, args, overrides, seed):
    """{model: reason} for the models whose configuration cannot run on the dataset (MQL4GRec without published
    codes), checked before any row trains. Absolute paths in a reason are cut to file names: the reason goes into
    the README."""
    from recbole_genrec.config import GenRecConfig

    reasons = {}
    for model in models:
        try:
            GenRecConfig(model=model, dataset=args.dataset, config_dict=row_settings(model, seed, args, overrides))
        except ValueError as error:
            reasons[model] = re.sub(r"(?<![\w.])/(?:[^/\s]+/)+([^/\s]+)", r"\1", str(error))
    return reasons


def write_summary(rows, models, args, skipped=None):
    """The summary table (and, below it, each model that cannot run on the dataset with its reason) as markdown,
    its plot, and with --readme the README's block."""
    base = os.path.join(args.out, f"leaderboard-{args.dataset}")
    models = table_models(models, rows)
    table = markdown(summary_rows(rows, models))
    for model, reason in (skipped or {}).items():
        table += f"\n\n{model}: no row on {args.dataset}. {reason}"
    with open(base + ".md", "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    plot(rows, models, base + ".png")
    if args.readme:
        update_readme(os.path.join(ROOT, "README.md"), args.dataset, table)
    return table


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", default=None, help="folder holding <dataset>/ (own data)")
    parser.add_argument("--models", default=None, help="comma-separated (default: the profile's per_model sections)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "results", "leaderboard"),
                        help="checkpoints and resume files, one folder per row")
    parser.add_argument("--readme", action="store_true", help="write the summary into README.md's table")
    parser.add_argument("--summarize", action="store_true",
                        help="only write the summary, plot (and with --readme the README table) from the CSV")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tune", default="",
                        help="MODEL=HYPER_FILE,...: search these models with Ray Tune, then train tuned rows")
    parser.add_argument("--trials", type=int, default=8, help="random-search trials per tuned model (the same for all)")
    args, rest = parser.parse_known_args(argv)
    try:
        args.tune = dict(item.split("=", 1) for item in args.tune.split(",") if item.strip())
    except ValueError:
        parser.error(f"--tune takes MODEL=HYPER_FILE pairs separated by commas, got {args.tune!r}")
    for model, hyper_file in args.tune.items():
        if not os.path.isfile(hyper_file):
            parser.error(f"--tune: {model}'s hyper file {hyper_file} does not exist (see hyper/README.md)")
    from recbole_genrec.cli import parse_args

    _, overrides = parse_args(rest)
    return args, overrides


def main(argv=None):
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    from recbole_genrec.cli import set_threads
    from recbole_genrec.quick_start import run_recbole_genrec
    from recbole_genrec.results import read_csv, write_csv

    set_threads(args.threads)
    models = [m.strip() for m in (args.models or ",".join(profile_models(args.profile))).split(",") if m.strip()]
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    csv_path = os.path.join(args.out, f"leaderboard-{args.dataset}.csv")
    rows = read_csv(csv_path) if os.path.isfile(csv_path) else []
    done = {(row["model"], int(row["seed"])) for row in rows}
    skipped = unrunnable(models, args, overrides, seeds[0])  # every configuration checked before any row trains
    for model, reason in skipped.items():
        print(f"{model} skipped on {args.dataset}: {reason}", flush=True)
    if args.summarize:
        if not rows:
            raise SystemExit(f"No rows in {csv_path} yet: nothing to summarize.")
        print(write_summary(rows, models, args, skipped))
        return 0
    unknown = sorted(set(args.tune) - set(models))
    if unknown:
        raise SystemExit(f"--tune names {', '.join(unknown)}, not among the table's models ({', '.join(models)}).")
    for model in (m for m in models if m not in skipped):  # and every search space
        if model in args.tune:
            from recbole_genrec.tuning import check_search

            try:
                check_search(model, args.dataset, args.tune[model],
                             config_dict=search_settings(model, seeds[0], args, overrides))
            except ValueError as error:
                raise SystemExit(f"--tune: {model}'s search over {args.tune[model]}: {error}") from None
    for model in (m for m in models if m not in skipped):
        tuned = tuned_settings(model, args.tune[model], args, overrides, seeds[0]) if model in args.tune else None
        for label, keys in [(model, None)] + ([(TUNED.format(model=model), tuned)] if tuned else []):
            for seed in seeds:
                if (label, seed) in done:
                    print(f"{label} seed {seed}: in {csv_path} already", flush=True)
                    continue
                settings = row_settings(model, seed, args, overrides, keys)
                start = time.time()
                result = run_recbole_genrec(model, args.dataset, config_dict=dict(settings))
                if result["paused"]:
                    print(f"{label} seed {seed}: paused after {result['epochs']} epochs; the same command continues "
                          f"it", flush=True)
                    continue
                row = leaderboard_row(model, seed, result, settings, time.time() - start)
                if keys:
                    row.update(model=label, tuned=keys)  # written and read back as every CSV value is
                rows.append(row)
                write_csv(rows, csv_path)
                print(f"{label} seed {seed}: test {result['test_result']}", flush=True)
                write_summary(rows, models, args, skipped)
    if rows:
        print(write_summary(rows, models, args, skipped))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
