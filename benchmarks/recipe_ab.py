r"""Before/after of a recipe change: one model's defaults at two source trees, same CPU size, same seeds.

A recipe issue changes a method's yaml and code; this runs the model as each tree defines it, with only the sizes
and the budget fixed to the parity benchmark's CPU size (`benchmarks/peers.py`: history 10, d_model 64, 1 + 1
layers, 4 heads x 16, FFN 256, residual k-means 3 x 32 + collision digit, 8 epochs validated after each, 100
warm-up steps, no early exit), so that everything else (optimiser, learning rate, dropout, inputs, losses,
selection metric, beam) is each tree's own recipe. Each (tree, seed) runs in its own process with the tree first
on the path and as the working directory (its own yaml files, its own cache folder).

    git worktree add /tmp/before c183f8d     # or: git archive c183f8d | tar -x -C /tmp/before
    python benchmarks/recipe_ab.py --model=LIGER --trees=before=/tmp/before,after=. --seeds=3 --out=results/ab-liger

Rows go to `<out>/rows.csv` as they finish (seeds interleaved: a run cut short keeps complete pairs); the summary
is mean ± sample std per tree. Only settings that both trees know are passed.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time

# The parity benchmark's CPU size (benchmarks/peers.py SETTINGS["TIGER"]) and budget; nothing of the recipe.
SIZE = {"MAX_ITEM_LIST_LENGTH": 10, "d_model": 64, "d_ff": 256, "num_heads": 4, "d_kv": 16,
        "num_encoder_layers": 1, "num_decoder_layers": 1,
        "tokenizer": "RQKMeans",
        "tokenizer_params": {"num_levels": 3, "codebook_size": 32, "niter": 25, "collision": "append_digit"},
        "sid_collapse": "warn", "epochs": 8, "eval_step": 1, "warmup_steps": 100,
        "topk": [5, 10], "show_progress": False}
# Per model: LETTER, EAGER and ColaRec keep their own tokenizer (tokenizer None); their size keys below are merged
# into each tree's tokenizer_params and cf_params, the rest of those params stay each tree's recipe.
MODEL_SIZE = {
    "LETTER": {"tokenizer": None,
               "tokenizer_params": {"num_levels": 4, "codebook_size": 32, "latent_dim": 32,
                                    "hidden_dims": [256, 128, 64], "epochs": 150, "n_clusters": 4,
                                    "collision": "reassign_last_level"},
               "cf_params": {"hidden_size": 32, "epochs": 3}},
    # Tree tokenizers: each tree's own (HKMeans), at the quick profile's branches and CF sizes.
    "EAGER": {"tokenizer": None,
              "tokenizer_params": {"branches": 64, "num_levels": 0, "niter": 25, "standardize": False,
                                   "collision": "none"},
              "cf_params": {"hidden_size": 64, "inner_size": 128, "epochs": 3}},
    "ColaRec": {"tokenizer": None,
                "tokenizer_params": {"branches": 32, "num_levels": 0, "niter": 25, "standardize": False,
                                     "collision": "none"},
                "cf_params": {"model": "LightGCN", "embedding_size": 64, "epochs": 5}},
}
METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")

WORKER = r"""
import json, resource, sys, time, torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from recbole_genrec.quick_start import run_recbole_genrec
start = time.time()
result = run_recbole_genrec(model=spec["model"], dataset=spec["dataset"], config_dict=spec["config"], saved=True)
test = result["test_result"]
row = {key: float(test[key]) for key in %r}
row.update(valid=float(result["best_valid_score"]), wall_seconds=time.time() - start,
           peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
print("AB_ROW " + json.dumps(row))
""" % (METRICS,)


def tree_yaml(tree, model):
    import yaml

    for folder in ("properties/model", "recbole_genrec/properties/model"):  # the layout moved at c0a73ea
        path = os.path.join(tree, folder, f"{model}.yaml")
        if os.path.exists(path):
            with open(path) as handle:
                return yaml.safe_load(handle)
    raise FileNotFoundError(f"no {model}.yaml under {tree}")


def config_for(model, seed, tree, epochs=SIZE["epochs"]):
    config = {**SIZE, "seed": seed, "epochs": epochs, "stopping_step": epochs + 1}
    own = MODEL_SIZE.get(model, {})
    for key, value in own.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    if own:  # dict settings: the size keys on top of the tree's own (the rest of them is its recipe)
        recipe = tree_yaml(tree, model)
        for key, value in own.items():
            if isinstance(value, dict) and isinstance(recipe.get(key), dict):
                config[key] = {**recipe[key], **value}
        params = config.get("tokenizer_params", {})
        if "collision_check_interval" in params and own.get("tokenizer", "") is None:
            # Checks of the lowest-collision weights: as many per fit as the recipe's (its interval scaled with the
            # epochs), so that a shortened fit still chooses among checkpoints.
            ratio = params["epochs"] / recipe["tokenizer_params"]["epochs"]
            params["collision_check_interval"] = max(1, round(recipe["tokenizer_params"]["collision_check_interval"]
                                                              * ratio))
    return config


def run_one(model, dataset, label, tree, seed, threads, out, epochs):
    tree = os.path.abspath(tree)
    spec = {"model": model, "dataset": dataset, "threads": threads, "config": config_for(model, seed, tree, epochs)}
    log_path = os.path.join(out, "logs", f"{model}-{label}-{seed}.log")
    env = {**os.environ, "PYTHONPATH": tree}
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(spec)], cwd=tree, env=env,
                              stdout=subprocess.PIPE, stderr=log, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("AB_ROW ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{model} {label} seed {seed} failed (exit {proc.returncode}); log {log_path}")
    commit = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"model": model, "tree": label, "commit": commit or tree, "seed": seed, "dataset": dataset,
            **json.loads(lines[-1][len("AB_ROW "):])}


def summary(rows):
    lines = ["| model | tree | seeds | R@5 | R@10 | N@5 | N@10 | best valid | per seed R@10 / N@10 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((row["model"], row["tree"]) for row in rows):
        group = [row for row in rows if (row["model"], row["tree"]) == key]

        def stat(name):
            values = [float(row[name]) for row in group]
            return f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")
        per_seed = ", ".join(f"{float(r['recall@10']):.4f} / {float(r['ndcg@10']):.4f}" for r in group)
        lines.append(f"| {key[0]} | {key[1]} | {len(group)} | " + " | ".join(stat(m) for m in METRICS)
                     + f" | {stat('valid')} | {per_seed} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--trees", required=True, help="label=path,label=path: source trees to compare")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=2020)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=SIZE["epochs"], help="the budget (no early exit)")
    parser.add_argument("--out", default="results/recipe-ab")
    parser.add_argument("--summarize", action="store_true", help="print <out>/rows.csv's summary and exit")
    args = parser.parse_args(argv)
    csv_path = os.path.join(args.out, "rows.csv")
    if args.summarize:
        with open(csv_path) as handle:
            print(summary(list(csv.DictReader(handle))))
        return
    trees = [item.split("=", 1) for item in args.trees.split(",")]
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for label, tree in trees:
            row = run_one(args.model, args.dataset, label, tree, seed, args.threads, args.out, args.epochs)
            row["date"] = time.strftime("%Y-%m-%d")
            rows.append(row)
            new = not os.path.exists(csv_path)
            with open(csv_path, "a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(row))
                if new:
                    writer.writeheader()
                writer.writerow(row)
            print(f"{args.model} {label} seed {seed}: R@10 {row['recall@10']:.4f} N@10 {row['ndcg@10']:.4f} "
                  f"valid {row['valid']:.4f} ({row['wall_seconds']:.0f} s)", flush=True)
    print(summary(rows))


if __name__ == "__main__":
    main()
