"""Semantic-ID quality of several models' tokenizers on the same data, side by side.

    python benchmarks/compare_tokenizers.py --dataset=ml-100k --models=TIGER,LETTER
    python benchmarks/compare_tokenizers.py --dataset=ml-100k --models=TIGER,LETTER --profile=quickstart
    python benchmarks/compare_tokenizers.py --dataset=amazon-beauty --models=TIGER,LETTER --out=results/tok-beauty.csv

Each model's tokenizer hook runs exactly as in training (its own representation, tokenizer and parameters, fitted
on the same RecBole split, cached). Every tokenizer is then also judged against the same collaborative item vectors
(RecBole's SASRec on the training split, `cf_params` of the reference model, LETTER by default), so the agreement
of shared ID prefixes with CF similarity is comparable across tokenizers, including those that never saw it.
`--profile` is the main CLI's (quickstart, none, or a yaml with shared keys and `per_model:` sections); any further
`--key=value` is a config override applied to every model (RecBole style, as in the main CLI).

Recipes before/after (`--variants`): a yaml of labelled rows, each `model:` with `tokenizer_params:` merged into
that model's yaml ones and top-level `config:` keys, e.g. `benchmarks/tokenizer_recipes.yaml`. `--epoch_scale`
multiplies every row's tokenizer epochs (and collision-check interval) alike, so recipes whose budgets differ keep
their ratio on a CPU:

    python benchmarks/compare_tokenizers.py --dataset=amazon-beauty --variants=benchmarks/tokenizer_recipes.yaml \
        --epoch_scale=0.1 --out=results/tok-recipes-beauty.csv
"""
import argparse
import os
import time

import common  # noqa: F401  (this checkout's recbole_genrec first on the path)
from recbole_genrec.cli import load_profile, parse_args, resolve_profile


def tokenizer_row(model, dataset_name, overrides, reference_overrides, cf_reference, variant=None):
    from recbole.data import data_preparation

    from recbole_genrec.config import GenRecConfig
    from recbole_genrec.data import create_dataset
    from recbole_genrec.representation import item_cf_embeddings
    from recbole_genrec.tokenization import prefix_cf_agreement

    # a collapsed codebook is a finding to report here, not a reason to stop
    config = GenRecConfig(model=model, dataset=dataset_name, config_dict={**overrides, "sid_collapse": "warn"})
    start = time.time()
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    seconds = time.time() - start
    semantic_ids = dataset.semantic_ids
    quality = semantic_ids.quality
    reference_config = GenRecConfig(model=cf_reference, dataset=dataset_name, config_dict=reference_overrides)
    cf = item_cf_embeddings(reference_config, dataset, train_data._dataset)
    agreement = prefix_cf_agreement(semantic_ids.codes[1:], cf[1:])
    row = {
        "model": model,
        "variant": variant,
        "tokenizer": quality.get("tokenizer"),
        "codes": "x".join(str(size) for size in quality["vocab_sizes"]),
        "items": quality["n_items"],
        "collision_rate": quality["collision_rate"],
        "collision_policy": quality.get("collision_policy"),
        "collision_rate_after_policy": quality.get("collision_rate_after_policy"),
        "max_items_per_id": quality["max_items_per_id"],
        "usage_per_level": "/".join(f"{usage:.2f}" for usage in quality["usage"]),
        "perplexity_per_level": "/".join(f"{p:.0f}" for p in quality["perplexity"]),
        "cf_cos_all_pairs": agreement.get("all_pairs"),
    }
    row.update({f"cf_cos_{key}": value for key, value in agreement.items() if key.startswith("same_prefix")})
    fit = quality.get("fit_report") or {}
    row["epochs"] = fit.get("epochs")
    row["kept_epoch"] = fit.get("kept_epoch")
    row["final_reconstruction_loss"] = fit.get("final_reconstruction_loss")
    row["tokenizer_seconds"] = semantic_ids.fit_seconds
    row["stage_seconds"] = seconds
    return row


def recipe_variants(path, epoch_scale=1.0):
    """[(label, model, settings)] of a variants yaml: each row's tokenizer_params merged into its model's yaml
    ones (a run's config would replace the whole dict), epochs scaled by `epoch_scale`."""
    from recbole_genrec.paths import find_properties_dir
    from recbole_genrec.safety import load_config_yaml

    rows = []
    for label, spec in (load_config_yaml(path) or {}).items():
        model = spec["model"]
        own = load_config_yaml(os.path.join(find_properties_dir(), "model", f"{model}.yaml")) or {}
        params = {**(own.get("tokenizer_params") or {}), **(spec.get("tokenizer_params") or {})}
        for key in ("epochs", "collision_check_interval"):
            if params.get(key):
                params[key] = max(1, round(params[key] * epoch_scale))
        rows.append((label, model, {**(spec.get("config") or {}), "tokenizer_params": params}))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--models", default="TIGER,LETTER")
    parser.add_argument("--cf_reference", default="LETTER", help="model whose cf_params define the CF vectors")
    parser.add_argument("--out", default=None, help="CSV file for the table")
    parser.add_argument("--profile", default="none", help="quickstart, none, or a profile yaml (see the main CLI)")
    parser.add_argument("--variants", default=None, help="yaml of labelled recipe rows (replaces --models)")
    parser.add_argument("--epoch_scale", type=float, default=1.0, help="with --variants: scale every fit's epochs")
    parser.add_argument("--rows", default=None, help="with --variants: only these labels (comma-separated)")
    args, rest = parser.parse_known_args(argv)
    overrides = {"state": "WARNING", **parse_args(rest)[1]}
    profile = resolve_profile(args.profile)

    def settings(model):
        return {**load_profile(model, profile), **overrides} if profile else dict(overrides)

    if args.variants:
        runs = [(label, model, {**settings(model), **variant})
                for label, model, variant in recipe_variants(args.variants, args.epoch_scale)]
        if args.rows:
            wanted = [label.strip() for label in args.rows.split(",")]
            unknown = sorted(set(wanted) - {label for label, _, _ in runs})
            if unknown:
                raise SystemExit(f"--rows {unknown} not in {args.variants}: {', '.join(label for label, _, _ in runs)}")
            runs = [run for run in runs if run[0] in wanted]
    else:
        runs = [(None, model, settings(model)) for model in args.models.split(",")]
    from recbole_genrec.results import format_table, write_csv

    rows = []
    for label, model, model_settings in runs:
        rows.append(tokenizer_row(model, args.dataset, model_settings, settings(args.cf_reference),
                                  args.cf_reference, variant=label))
        if args.out:  # a long comparison keeps the rows it has
            write_csv(rows, args.out)
    print(f"\nSemantic-ID quality on {args.dataset} (CF vectors: {args.cf_reference}'s cf_params)\n{format_table(rows)}")
    if args.out:
        write_csv(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
