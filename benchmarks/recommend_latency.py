"""Latency of `recommend` per user, from a trained checkpoint (README, "Recommendations from a checkpoint").

    python benchmarks/recommend_latency.py saved/TIGER-....pth saved/SASRec-....pth --threads=1

For each checkpoint: the load (config, dataset, semantic IDs from the caches: once per process), then top-10 for
dataset users one request at a time (batch 1, `--singles` users) and in one request of `--batch` users (drawn with
replacement when the dataset has fewer), with the user's items excluded (the default) and kept. Each timing runs
once after a warm-up request. Prints a Markdown table of milliseconds per user."""
import argparse
import random
import time

import common  # noqa: F401  (this checkout's recbole_genrec first on the path)


def measure(checkpoint, singles, batch, k, device):
    from recbole_genrec.recommend import Recommender

    start = time.perf_counter()
    recommender = Recommender(checkpoint, device)
    load_seconds = time.perf_counter() - start
    users = list(recommender.dataset.field2id_token[recommender.dataset.uid_field][1:])
    rng = random.Random(0)
    rows = []
    for exclude_seen in (True, False):
        recommender.recommend(users=users[:1], k=k, exclude_seen=exclude_seen)  # warm-up (and model build)
        picked = rng.sample(users, min(singles, len(users)))
        start = time.perf_counter()
        for user in picked:
            recommender.recommend(users=[user], k=k, exclude_seen=exclude_seen)
        single_ms = 1000 * (time.perf_counter() - start) / len(picked)
        many = [rng.choice(users) for _ in range(batch)]
        recommender.recommend(users=many, k=k, exclude_seen=exclude_seen, batch_size=batch)  # builds its width
        start = time.perf_counter()
        recommender.recommend(users=many, k=k, exclude_seen=exclude_seen, batch_size=batch)
        batch_ms = 1000 * (time.perf_counter() - start) / batch
        rows.append((recommender.config["model"], exclude_seen, load_seconds, single_ms, batch_ms))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--singles", type=int, default=50, help="users timed one request each")
    parser.add_argument("--batch", type=int, default=1000, help="users in the one batched request")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    import torch

    import recbole_genrec  # noqa: F401  (compatibility shims before RecBole)

    if args.threads:
        torch.set_num_threads(args.threads)
    print("| model | seen items | load s | ms/user, batch 1 | ms/user, batch %d |" % args.batch)
    print("|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        for model, exclude_seen, load_seconds, single_ms, batch_ms in measure(
                checkpoint, args.singles, args.batch, args.k, args.device):
            print(f"| {model} | {'excluded' if exclude_seen else 'kept'} | {load_seconds:.1f} | {single_ms:.1f} | "
                  f"{batch_ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
