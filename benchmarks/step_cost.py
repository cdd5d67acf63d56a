r"""Every method's training step beside TIGER's at equal widths, measured side by side in one process.

    python benchmarks/step_cost.py                                            # ml-100k, every method that runs there
    python benchmarks/step_cost.py --dataset=amazon-instruments-mm --models=TIGER,MQL4GRec
    python benchmarks/step_cost.py --profile=properties/quickstart.yaml --models=TIGER,LIGER

Each model is built as `benchmarks/leaderboard.py` builds its rows (`--profile`, default benchmarks/leaderboard.yaml:
d_model 64, FFN 256, 1 + 1 layers, history 10, batch 256; RPG 2 decoder layers), on one split of `--dataset`, with
its own tokenizer and recipe. The training steps of all models are interleaved (one step of each model in turn), so a
machine that slows down slows every model alike and only the ratios are read. A step is what the trainer does per
batch: the model's `calculate_loss` on one batch of the training loader, backward, gradient clipping at the config's
norm and an AdamW step.

Prints, per model: median ms per step, the loader's rows per step (users for most models; RPG: sequences;
MQL4GRec: training targets, each standing for several samples of its five tasks), steps per epoch, the projected epoch seconds (steps x median)
and the two ratios to TIGER: per step and per epoch. TIGER is always built (the reference). `--csv=PATH` appends the
rows with the commit and the machine's threads.
"""
import argparse
import csv
import os
import statistics
import time

from common import ROOT, commit

DEFAULT_PROFILE = os.path.join(ROOT, "benchmarks", "leaderboard.yaml")
ML100K_MODELS = ("TIGER", "LETTER", "LIGER", "EAGER", "ColaRec", "RPG", "SASRec")
WIDTHS = ("d_model", "d_ff", "num_heads", "d_kv", "num_encoder_layers", "num_decoder_layers", "num_layers",
          "MAX_ITEM_LIST_LENGTH", "train_batch_size")


def build(model_name, dataset, profile, data_path=None):
    from recbole_genrec.cli import load_profile
    from recbole_genrec.quick_start import prepare_run

    settings = {**load_profile(model_name, profile), "state": "WARNING", "show_progress": False}
    if data_path:
        settings["data_path"] = data_path
    config, _, model, train_data, _, _ = prepare_run(model_name, dataset, None, settings)
    model.train()
    return config, model, train_data


def trainer_step(config, model):
    """One step as the trainer takes it: loss, backward, gradient clipping (the config's), AdamW."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=config["learning_rate"],
                                  weight_decay=config["weight_decay"] or 0.0)
    clip = (config["clip_grad_norm"] or {}).get("max_norm")

    def step(batch):
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    return step


def batches(train_data):
    """The loader's batches, round and round (an epoch ends before the timing does on small datasets)."""
    while True:
        yield from train_data


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data_path", default=None, help="a folder holding <dataset>/<dataset>.inter (own data)")
    parser.add_argument("--models", default=",".join(ML100K_MODELS))
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (after one untimed step)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--csv", default=None, help="append the rows to this CSV")
    args = parser.parse_args(argv)
    from recbole_genrec.cli import quiet_library_deprecations

    quiet_library_deprecations()  # RecBole's pandas and GradScaler notices, once per model otherwise
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["TIGER"] + [name for name in args.models.split(",") if name and name != "TIGER"]
    built = {}
    for name in names:
        start = time.perf_counter()
        built[name] = build(name, args.dataset, args.profile, args.data_path)
        print(f"{name}: built in {time.perf_counter() - start:.0f} s (tokenizer, representation, split, model)",
              flush=True)
    for name, (config, _, _) in built.items():
        widths = {key: config[key] for key in WIDTHS if config[key] is not None}
        print(f"{name}: {widths}")
    steps = {name: trainer_step(config, model) for name, (config, model, _) in built.items()}
    loaders = {name: batches(train_data) for name, (_, _, train_data) in built.items()}
    samples = {name: [] for name in built}
    times = {name: [] for name in built}
    for index in range(args.steps + 1):  # the first step of each model is not timed
        for name in built:
            batch = next(loaders[name])
            start = time.perf_counter()
            steps[name](batch)
            if index:
                times[name].append(time.perf_counter() - start)
                samples[name].append(len(batch))
    tiger_step = statistics.median(times["TIGER"])
    tiger_epoch = tiger_step * len(built["TIGER"][2])
    print(f"\n{args.dataset}, profile {os.path.relpath(args.profile, ROOT)}, {torch.get_num_threads()} torch "
          f"threads, {args.steps} timed steps per model, interleaved")
    print("| model | ms per step | samples per step | steps per epoch | epoch s (projected) | step / TIGER's | "
          "epoch / TIGER's |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for name, (_, model, train_data) in built.items():
        step = statistics.median(times[name])
        epoch = step * len(train_data)
        row = {"dataset": args.dataset, "model": name, "ms_per_step": round(step * 1000, 1),
               "samples_per_step": round(statistics.mean(samples[name])), "steps_per_epoch": len(train_data),
               "epoch_s": round(epoch, 1), "step_ratio": round(step / tiger_step, 2),
               "epoch_ratio": round(epoch / tiger_epoch, 2), "threads": torch.get_num_threads(),
               "profile": os.path.relpath(args.profile, ROOT), "commit": commit("recbole_genrec", "properties")}
        rows.append(row)
        print(f"| {name} | {row['ms_per_step']:.0f} | {row['samples_per_step']} | {row['steps_per_epoch']} | "
              f"{row['epoch_s']:.1f} | {row['step_ratio']:.2f}x | {row['epoch_ratio']:.2f}x |")
    if args.csv:
        new = not os.path.exists(args.csv)
        with open(args.csv, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            if new:
                writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
