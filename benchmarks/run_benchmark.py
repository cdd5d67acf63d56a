r"""Benchmark: raw atomic files -> test metrics, seconds per stage and throughputs, one table per command.

    python benchmarks/run_benchmark.py --dataset=amazon-beauty --models=SASRec,TIGER --stock_sasrec \
        --out=results/bench-beauty
    python benchmarks/run_benchmark.py --dataset=ml-100k --models=SASRec,TIGER --stock_sasrec --profile=quickstart \
        --epochs=2 --MAX_ITEM_LIST_LENGTH=20 --threads=1
    python benchmarks/run_benchmark.py --dataset=amazon-beauty --study --out=results/study-beauty

Every model trains on the same split (RecBole leave-one-out `LS: valid_and_test`, `order: TO`, full ranking) and is
scored by RecBole's metric classes through the plugin's evaluator. SASRec always uses the protocol below (RecBole's
implementation, cross-entropy loss); `--stock_sasrec` adds the same SASRec run through stock RecBole only (its own
loader, training loop and evaluator): the reference for speed. Plugin runs use the trainer's device-resident batches
and, on a GPU, bf16 autocast, unless `--no_device_batches` / `--precision=none` (`--precision=bf16` on a CPU too).

`--profile` is the main CLI's: `none` (default) takes the papers' model defaults
(`properties/model/<Model>.yaml`), `quickstart` the CPU quick-start profile
(`properties/quickstart.yaml`), a path any yaml of that shape; it applies to generative models only
(SASRec always follows the protocol below).
Any other `--key=value` is a RecBole config override for every model (`--epochs=2`); `--Model:key=value` for one
model only (`--TIGER:train_time_budget=420`: no new epoch after 420 s of training, best checkpoint kept).

`--study` runs TIGER's ablations instead: RQ-VAE vs residual k-means tokenizer and history lengths (each a trained
model), then beam sizes and constrained vs the paper's unconstrained decoding (with its invalid rate) evaluated on
the base model's checkpoint, since they only change inference.

Writes `<out>/results.csv|.md|.png` (`study.*` with --study); `--append` keeps the rows of an earlier command in
the same table (a row of the same model and runner is replaced), e.g. for machines lent for a few minutes per command.
"""
import argparse
import datetime
import os
import shlex
import sys
import time

import common

# SASRec as issue 3 specifies it (RecBole's implementation, CE loss, early stopping on validation NDCG@10).
SASREC_PROTOCOL = {
    "MAX_ITEM_LIST_LENGTH": 50, "hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 2,
    "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "learning_rate": 1e-3, "train_batch_size": 2048,
    "loss_type": "CE", "epochs": 200, "eval_step": 1, "stopping_step": 10, "valid_metric": "NDCG@10",
}
MAIN_COLUMNS = ["model", "runner", "test_recall@5", "test_recall@10", "test_ndcg@5", "test_ndcg@10",
                # the evaluator's cold-start split (issue 5): test users whose target never occurs in training
                "test_cold_recall@10", "test_cold_ndcg@10", "test_inset_recall@10", "test_inset_ndcg@10",
                "cold_users", "cold_items_in_top10", "valid_score",
                "epochs", "stopped_by_time_budget", "text_seconds", "tokenizer_seconds", "train_seconds",
                "test_eval_seconds",
                "train_seq_per_s", "eval_users_per_s", "peak_gpu_memory_mb", "parameters", "wall_seconds"]
STUDY_COLUMNS = ["model", "tokenizer", "history", "beam", "constrained", "test_recall@5", "test_recall@10",
                 "test_ndcg@5", "test_ndcg@10", "invalid_rate", "epochs", "tokenizer_seconds", "train_seconds",
                 "test_eval_seconds", "eval_users_per_s"]
# The study's other tokenizer, with the base's levels and codebook size; RQ-VAE epochs per profile.
ALTERNATIVE_TOKENIZER = {"RQVAE": "RQKMeans", "RQKMeans": "RQVAE"}
RQVAE_EPOCHS = {"papers": 3000, "profile": 300}


def parse_args(argv):
    from recbole_genrec.cli import parse_args as parse_overrides

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--models", default="SASRec,TIGER", help="comma-separated, run in this order")
    parser.add_argument("--stock_sasrec", action="store_true", help="SASRec through stock RecBole too")
    parser.add_argument("--study", action="store_true", help="TIGER's tokenizer/history/beam/constraint study")
    parser.add_argument("--profile", default="none", help="none (papers' defaults), quickstart, or a yaml path")
    parser.add_argument("--out", default=None, help="output folder (default results/bench-<dataset>)")
    parser.add_argument("--append", action="store_true", help="add to the table already in --out")
    parser.add_argument("--config_files", default="", help="comma-separated yaml files for every model")
    parser.add_argument("--no_device_batches", action="store_true", help="plugin runs use RecBole's loader")
    parser.add_argument("--precision", choices=("bf16", "none"), default=None,
                        help="plugin runs; default bf16 on a GPU, none on a CPU (where bf16 is slower)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (on a shared CPU, 1 thread avoids oversubscription stalls)")
    parser.add_argument("--study_histories", default="20,50")
    parser.add_argument("--study_beams", default="10,20,50")
    args, rest = parser.parse_known_args(argv)
    _, overrides = parse_overrides(rest)
    if args.precision is None:
        import torch

        args.precision = "bf16" if torch.cuda.is_available() else "none"
    args.overrides = {k: v for k, v in overrides.items() if ":" not in k}
    args.per_model = {}
    for key, value in overrides.items():
        if ":" in key:
            model, _, name = key.partition(":")
            args.per_model.setdefault(model, {})[name] = value
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.out = args.out or os.path.join("results", f"bench-{args.dataset}")
    args.config_files = [f for f in args.config_files.replace(",", " ").split() if f] or None
    return args


def model_config(model, args, plugin=True):
    """A model's config dict: profile, SASRec protocol, command-line overrides, then its own overrides."""
    from recbole_genrec import registry
    from recbole_genrec.cli import load_profile, resolve_profile

    config = {}
    profile = resolve_profile(args.profile)
    if profile and registry.is_genrec_model(model):
        config.update(load_profile(model, profile))
    if model == "SASRec":
        config.update(SASREC_PROTOCOL)
    if plugin:
        config.update(device_batches=not args.no_device_batches, mixed_precision=args.precision)
    config.update(args.overrides)
    config.update(args.per_model.get(model, {}))
    return config


def measured_row(run, label, runner, wall_seconds, context):
    """A results row: RecBole's metrics and the plugin's timings, plus throughputs and where it ran."""
    from recbole_genrec.measure import per_second
    from recbole_genrec.results import result_row

    row = result_row(run)
    row.update(model=label, runner=runner)
    epochs = run.get("epochs") or 0
    row.update(
        stopped_by_time_budget=run.get("stopped_by_time_budget"),
        text_seconds=run.get("text_seconds"),
        train_seq_per_s=per_second((run.get("train_sequences") or 0) * epochs or None, run.get("train_seconds")),
        eval_users_per_s=per_second(run.get("test_users"), run.get("test_eval_seconds")),
        peak_gpu_memory_mb=run.get("peak_gpu_memory_mb"),
        wall_seconds=wall_seconds,
    )
    row.update(context)
    return row


def context_of(args, model=None):
    """Columns that say where and how a row was measured."""
    from recbole_genrec import registry
    from recbole_genrec.config import GenRecConfig
    from recbole_genrec.measure import hardware
    from recbole_genrec.representation.text import encoder_name

    encoder = None
    if model and registry.is_genrec_model(model):
        config = GenRecConfig(model=model, dataset=args.dataset, config_file_list=args.config_files,
                              config_dict=model_config(model, args))
        encoder = encoder_name(config["text_encoder"])
    return {"text_encoder": encoder, "hardware": hardware(), "date": datetime.date.today().isoformat(),
            "command": args.command}


def run_main(args):
    from recbole_genrec.quick_start import run_recbole_genrec

    rows = []
    for model in args.models:
        start = time.time()
        run = run_recbole_genrec(model, args.dataset, config_file_list=args.config_files,
                                 config_dict=model_config(model, args))
        runner = "plugin" + ("" if args.no_device_batches else ", device batches")
        runner += ", bf16" if args.precision == "bf16" else ""
        rows.append(measured_row(run, model, runner, time.time() - start, context_of(args, model)))
    if args.stock_sasrec:
        if args.config_files:
            raise ValueError("--stock_sasrec takes its settings from --key=value overrides, not --config_files.")
        start = time.time()
        run = common.run_stock_recbole("SASRec", args.dataset, config_dict=model_config("SASRec", args, plugin=False))
        rows.append(measured_row(run, "SASRec (stock RecBole)", "stock RecBole", time.time() - start,
                                 context_of(args)))
    return rows


def invalid_rate_counter(model):
    """Wrap model.generate_topk to average the beam search's invalid rate over all evaluated users."""
    counts = {"invalid": 0.0, "users": 0}
    generate = model.generate_topk

    def counted(interaction, k):
        output = generate(interaction, k)
        counts["invalid"] += model.last_invalid_rate * len(interaction)
        counts["users"] += len(interaction)
        return output

    model.generate_topk = counted
    return lambda: counts["invalid"] / counts["users"] if counts["users"] else None


def run_study(args):
    """TIGER: tokenizers and histories retrained; beams and constrained decoding on the base checkpoint."""
    from recbole_genrec.cli import resolve_profile
    from recbole_genrec.config import GenRecConfig
    from recbole_genrec.measure import per_second
    from recbole_genrec.quick_start import load_data_and_model, run_recbole_genrec
    from recbole_genrec.results import flat_metrics
    from recbole_genrec.trainer import GenRecTrainer

    model = "TIGER"
    base_dict = model_config(model, args)
    base = GenRecConfig(model=model, dataset=args.dataset, config_file_list=args.config_files, config_dict=base_dict)
    base_tokenizer, base_params = base["tokenizer"], dict(base["tokenizer_params"])
    base_history, base_beam = base["MAX_ITEM_LIST_LENGTH"], base["beam_size"]
    context = context_of(args, model)
    other = ALTERNATIVE_TOKENIZER[base_tokenizer]
    other_params = {"num_levels": base_params["num_levels"], "codebook_size": base_params["codebook_size"],
                    "collision": base_params.get("collision", "append_digit")}
    if other == "RQVAE":
        other_params["epochs"] = RQVAE_EPOCHS["profile" if resolve_profile(args.profile) else "papers"]

    trained = [("base", {}, base_tokenizer, base_history),
               (f"tokenizer {other}", {"tokenizer": other, "tokenizer_params": other_params}, other, base_history)]
    trained += [(f"history {h}", {"MAX_ITEM_LIST_LENGTH": h}, base_tokenizer, h)
                for h in map(int, args.study_histories.split(",")) if h != base_history]
    rows, base_run = [], None
    for label, changes, tokenizer, history in trained:
        start = time.time()
        run = run_recbole_genrec(model, args.dataset, config_file_list=args.config_files,
                                 config_dict={**base_dict, **changes})
        base_run = base_run or run
        row = measured_row(run, f"TIGER {label}", "train + test", time.time() - start, context)
        row.update(tokenizer=tokenizer, history=history, beam=base_beam, constrained=True, invalid_rate=0.0)
        rows.append(row)

    # Inference-only variants: one trained model (the base checkpoint), the test split evaluated per setting.
    config, tiger, _, _, _, test_data = load_data_and_model(base_run["checkpoint"])
    trainer = GenRecTrainer(config, tiger)
    variants = [(beam, True) for beam in map(int, args.study_beams.split(","))] + [(base_beam, False)]
    for beam, constrained in variants:
        tiger.beam_size, tiger.constrained = beam, constrained
        invalid_rate = invalid_rate_counter(tiger)
        result = trainer.evaluate(test_data, load_best_model=False)
        row = {"model": f"TIGER base, beam {beam}" + ("" if constrained else ", unconstrained"),
               "dataset": args.dataset, "tokenizer": base_tokenizer, "history": base_history, "beam": beam,
               "constrained": constrained, "invalid_rate": invalid_rate(), "epochs": base_run["epochs"],
               "test_eval_seconds": trainer.last_eval_seconds,
               "eval_users_per_s": per_second(trainer.last_eval_users, trainer.last_eval_seconds)}
        row.update({f"test_{k}": v for k, v in flat_metrics(result).items()})
        row.update(context)
        rows.append(row)
        del tiger.generate_topk  # drop the counting wrapper (an instance attribute)
    return rows


def write_outputs(rows, args, name, columns):
    from recbole_genrec.results import format_markdown, format_table, plot_results, read_csv, write_csv

    os.makedirs(args.out, exist_ok=True)
    csv_path = os.path.join(args.out, f"{name}.csv")
    if args.append and os.path.isfile(csv_path):
        new = {(row["model"], row.get("runner")) for row in rows}
        rows = [row for row in read_csv(csv_path) if (row["model"], row.get("runner")) not in new] + rows
    write_csv(rows, csv_path)
    plot_results(rows, os.path.join(args.out, f"{name}.png"))
    columns = [c for c in columns if any(row.get(c) is not None for row in rows)]
    provenance = sorted({(row.get("date"), row.get("hardware"), row.get("command")) for row in rows}, key=str)
    encoders = sorted({row["text_encoder"] for row in rows if row.get("text_encoder")})
    lines = [f"# {'TIGER study' if args.study else 'Benchmark'} on {args.dataset}", "",
             "Protocol: RecBole leave-one-out (`LS: valid_and_test`, `order: TO`), full ranking, metrics by "
             "RecBole's metric classes. Seconds: text = text representation, tokenizer = tokenizer fit (0 on a cache "
             "hit), train = training epochs (validation excluded), test_eval = one test evaluation. "
             "Throughputs: training sequences x epochs / train seconds; test users / test seconds.", "",
             f"Text encoder: {', '.join(encoders) or 'none (no text-based model)'}.", "",
             format_markdown(rows, columns), "", "Measured:"]
    lines += [f"- {date}, {hardware}: `{command}`" for date, hardware, command in provenance]
    with open(os.path.join(args.out, f"{name}.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n" + format_table([{c: row.get(c) for c in columns} for row in rows]))
    print(f"\nWritten: {csv_path}, {name}.md and {name}.png in {args.out}")
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.command = "python benchmarks/run_benchmark.py " + " ".join(shlex.quote(a) for a in argv)
    from recbole_genrec import registry

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for model in args.models:  # fail before any training when one name is wrong
        registry.get_model(model)
    if args.study:
        return write_outputs(run_study(args), args, "study", STUDY_COLUMNS)
    return write_outputs(run_main(args), args, "results", MAIN_COLUMNS)


if __name__ == "__main__":
    main()
