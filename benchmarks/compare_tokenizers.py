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
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_genrec.cli import load_profile, parse_args, resolve_profile  # noqa: E402  (after the path tweak)


def tokenizer_row(model, dataset_name, overrides, reference_overrides, cf_reference):
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
    row["tokenizer_seconds"] = semantic_ids.fit_seconds
    row["stage_seconds"] = seconds
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--models", default="TIGER,LETTER")
    parser.add_argument("--cf_reference", default="LETTER", help="model whose cf_params define the CF vectors")
    parser.add_argument("--out", default=None, help="CSV file for the table")
    parser.add_argument("--profile", default="none", help="quickstart, none, or a profile yaml (see the main CLI)")
    args, rest = parser.parse_known_args(argv)
    overrides = {"state": "WARNING", **parse_args(rest)[1]}
    profile = resolve_profile(args.profile)

    def settings(model):
        return {**load_profile(model, profile), **overrides} if profile else dict(overrides)

    rows = [tokenizer_row(model, args.dataset, settings(model), settings(args.cf_reference), args.cf_reference)
            for model in args.models.split(",")]
    from recbole_genrec.results import format_table, write_csv

    print(f"\nSemantic-ID quality on {args.dataset} (CF vectors: {args.cf_reference}'s cf_params)\n{format_table(rows)}")
    if args.out:
        write_csv(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
