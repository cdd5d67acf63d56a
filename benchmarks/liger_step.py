r"""LIGER's training step against TIGER's at equal widths, and where LIGER's goes.

Both models as the CPU quick start builds them (properties/quickstart.yaml: ml-100k, history 10, batch 1024,
d_model 64, 4 heads x 16, FFN 256, 1 + 1 layers, RQ-KMeans IDs), their steps interleaved in one process so that a
shared machine slows both alike:

    python benchmarks/liger_step.py --steps=10

Prints ms per training step (loss, backward, clipping, AdamW; median over the steps) of each model and their
ratio, then LIGER's parts, each timed alone (forward + backward of a scalar of its output, median): the input
embeddings of the history (text projection included), the text projection of the whole catalogue (the dense
loss's candidates), the encoder, and the whole loss.
"""
import argparse
import statistics
import time

import common  # noqa: F401  (puts this checkout's recbole_genrec on the path)

WIDTHS = ("d_model", "num_heads", "d_kv", "d_ff", "num_encoder_layers", "num_decoder_layers",
          "MAX_ITEM_LIST_LENGTH", "train_batch_size")


def build(model_name, dataset, overrides):
    from recbole_genrec.cli import load_profile
    from recbole_genrec.quick_start import prepare_run

    settings = {**load_profile(model_name), "state": "WARNING", "show_progress": False, **overrides}
    config, _, model, train_data, _, _ = prepare_run(model_name, dataset, None, settings)
    model.train()
    return config, model, train_data


def seconds(fn, repeats):
    """Median seconds of `fn()` over `repeats` calls after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def trainer_step(config, model):
    """One step as the trainer takes it: loss, backward, gradient clipping (the config's), AdamW."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"])
    clip = (config["clip_grad_norm"] or {}).get("max_norm")

    def step(batch):
        optimizer.zero_grad()
        model.calculate_loss(batch).backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    return step


def backward_of(fn):
    """fn() -> a tensor; forward and backward of its mean square (a scalar that depends on every output)."""
    return lambda: fn().float().pow(2).mean().backward()


def liger_parts(model, batch):
    encoded = {}

    def inputs():
        _, mask, hidden = model.input_embeddings(batch)
        encoded["inputs"] = (mask, hidden.detach().requires_grad_())
        return hidden

    inputs()
    return {
        "input embeddings of the history (text MLP included)": backward_of(inputs),
        "text MLP over the catalogue (dense candidates)": backward_of(lambda: model.text_projection(model.item_text)),
        "encoder": backward_of(lambda: model.backbone.encode_embeddings(encoded["inputs"][1], encoded["inputs"][0])),
        "whole loss": lambda: model.calculate_loss(batch).backward(),
    }


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    built = {name: build(name, args.dataset, {}) for name in ("TIGER", "LIGER")}
    widths = {name: {key: config[key] for key in WIDTHS} for name, (config, _, _) in built.items()}
    if widths["TIGER"] != widths["LIGER"]:
        raise SystemExit(f"The profiles' widths differ: {widths}")
    print(f"{args.dataset}, {widths['LIGER']}, {torch.get_num_threads()} torch threads, {args.steps} steps each")
    steps = {name: trainer_step(config, model) for name, (config, model, _) in built.items()}
    batches = {name: iter(train_data) for name, (_, _, train_data) in built.items()}
    times = {name: [] for name in built}
    for index in range(args.steps + 1):  # the first step of each is not timed
        for name in built:
            batch = next(batches[name])
            start = time.perf_counter()
            steps[name](batch)
            if index:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name}: {value * 1000:.0f} ms per training step")
    print(f"LIGER / TIGER: {median['LIGER'] / median['TIGER']:.2f}x")
    _, model, train_data = built["LIGER"]
    batch = next(iter(train_data))
    items, _ = model.history(batch)
    print(f"LIGER's history: {items.numel() * model.n_levels} tokens, {(items != 0).sum()} items, "
          f"{len(torch.unique(items[items != 0]))} distinct items (catalogue {len(model.item_text) - 1})")
    print("LIGER's parts, forward + backward, each alone:")
    for name, fn in liger_parts(model, batch).items():
        print(f"  {name}: {seconds(fn, max(3, args.steps // 2)) * 1000:.0f} ms")
    model.zero_grad()


if __name__ == "__main__":
    main()
