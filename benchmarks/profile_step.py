r"""Where a training step's time goes: torch.profiler over a few of our training steps and of cornac's, same model
size, same batches' shapes (the settings of benchmarks/peers.py).

    python benchmarks/profile_step.py --dataset=ml-100k --model=TIGER --steps=20 --out=results/profile-ml100k

Prints, for each implementation, the seconds per step split into data loading (RecBole's collate or cornac's
numpy-to-tensor), forward, backward and optimiser step, then the profiler's top operators by self CPU time; writes
the same text to `<out>/profile-<model>.txt`.
"""
import argparse
import os
import time

import common


def _timed_steps(batches, loss_fn, optimizer, clip, steps, warmup=3):
    """Seconds per phase over `steps` steps after `warmup` untimed ones; batches: an iterator of ready inputs."""
    import torch

    phases = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimiser": 0.0}
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        optimizer.zero_grad()
        loss = loss_fn(batch)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if clip:
            torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], clip)
        optimizer.step()
        t4 = time.perf_counter()
        if step >= warmup:
            for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[name] += seconds
    return {name: seconds / steps for name, seconds in phases.items()}


def ours(model_name, dataset, settings, steps):
    """Our model, RecBole's training loader (the batches our trainer sees), the loss our trainer calls."""
    import torch

    import peers
    from recbole_genrec import registry

    config, _, train_data, _, _, _ = common.prepare_split(model_name, dataset,
                                                          peers.plugin_config(model_name, settings, 2020))
    model = registry.get_model(model_name)(config, train_data._dataset)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["learning_rate"],
                                  weight_decay=settings["weight_decay"])

    def forever():
        while True:
            yield from train_data

    it = forever()
    clip = (peers.CLIP[model_name] or {}).get("max_norm")
    return _timed_steps(it, model.calculate_loss, optimizer, clip, steps), \
        lambda: model.calculate_loss(next(it)).backward()


def theirs(model_name, dataset, settings, steps):
    """cornac's TIGER module (HF T5Stack encoder/decoder, per-level heads) on batches of the same shape, built the
    way its `_fit_seq2seq` builds them (numpy history table -> tensors each step)."""
    import numpy as np
    import torch
    from cornac.models.tiger.tiger import TIGERSeq2Seq

    import peers

    if model_name != "TIGER":
        raise SystemExit("profile_step.py profiles cornac's TIGER module only.")
    config, dataset_obj, train_data, _, _, _ = common.prepare_split(model_name, dataset,
                                                                    peers.plugin_config(model_name, settings, 2020))
    codes = dataset_obj.semantic_ids.codes[1:].numpy()
    level_sizes = [int(codes[:, level].max()) + 1 for level in range(codes.shape[1])]
    torch.manual_seed(2020)
    module = TIGERSeq2Seq(level_sizes=level_sizes, d_model=settings["d_model"], d_ff=settings["d_ff"],
                          num_heads=settings["num_heads"], d_kv=settings["d_kv"],
                          num_enc_layers=settings["num_encoder_layers"],
                          num_dec_layers=settings["num_decoder_layers"], dropout=settings["dropout"])
    module.train()
    offsets = module.offsets.numpy()
    table = np.zeros((len(codes) + 1, len(level_sizes)), dtype="int64")
    table[: len(codes)] = codes + offsets
    pad = len(codes)
    rng = np.random.default_rng(0)
    batch, history = settings["train_batch_size"], settings["MAX_ITEM_LIST_LENGTH"]
    optimizer = torch.optim.AdamW(module.parameters(), lr=settings["learning_rate"],
                                  weight_decay=settings["weight_decay"])

    def batches():
        while True:
            hist = rng.integers(0, len(codes), size=(batch, history))
            hist[:, : history // 3] = pad  # some padding, as short histories have
            target = rng.integers(0, len(codes), size=batch)
            tokens = torch.tensor(table[hist].reshape(batch, -1), dtype=torch.long)
            yield tokens, (tokens != 0).float(), torch.tensor(codes[target], dtype=torch.long)

    it = batches()
    return _timed_steps(it, lambda b: module(*b), optimizer, None, steps), lambda: module(*next(it)).backward()


def main(argv=None):
    import torch
    from torch.profiler import ProfilerActivity, profile

    import peers

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="TIGER")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="results/profile")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = peers.settings_for(args.model)
    lines = [f"{args.model} on {args.dataset}, batch {settings['train_batch_size']}, history "
             f"{settings['MAX_ITEM_LIST_LENGTH']}, {torch.get_num_threads()} torch threads, {args.steps} steps"]
    for name, build in (("recbole_genrec", ours), ("cornac", theirs)):
        phases, one_step = build(args.model, args.dataset, settings, args.steps)
        total = sum(phases.values())
        lines.append(f"\n{name}: {total * 1000:.1f} ms/step = {settings['train_batch_size'] / total:.0f} seq/s; "
                     + ", ".join(f"{k} {v * 1000:.1f} ms ({v / total:.0%})" for k, v in phases.items()))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                one_step()
        lines.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"profile-{args.model}.txt"), "w") as handle:
        handle.write(text + "\n")


if __name__ == "__main__":
    main()
