"""Seconds per training epoch and evaluated users per second, with 1 and N DDP processes (recbole_genrec/distributed.py).

    python benchmarks/ddp_speed.py --dataset=amazon-beauty --models=SASRec,TIGER --nproc=1,2 --epochs=2

On a CPU the cores are split among the processes (2 cores: 1 process x 2 threads, then 2 processes x 1 thread); on a
GPU host each process gets one GPU (`--nproc=1,8` on eight GPUs). Every run is the plugin's whole run
(`run_recbole_genrec`, the quick-start profile unless --profile=none): the tokenizer cache of the first run serves
the later ones, so tokenizer seconds are not part of the figures. One table row per (model, processes).
"""
import argparse
import os

import common  # noqa: F401  (this checkout's recbole_genrec first on the path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--models", default="SASRec,TIGER")
    parser.add_argument("--nproc", default="1,2", help="process counts to compare, comma-separated")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--profile", default="quickstart", help="quickstart, none or a profile yaml")
    args = parser.parse_args(argv)

    import torch

    from recbole_genrec.cli import load_profile, resolve_profile
    from recbole_genrec.quick_start import run_recbole_genrec
    from recbole_genrec.results import format_table

    gpus = torch.cuda.device_count()
    rows = []
    for model in args.models.split(","):
        profile = resolve_profile(args.profile)
        settings = load_profile(model, profile) if profile else {}
        for nproc in (int(n) for n in args.nproc.split(",")):
            threads = max(1, args.cores // nproc)
            os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the spawned processes' torch
            torch.set_num_threads(threads)  # this process (nproc 1)
            gpu_id = ",".join(str(i) for i in range(nproc)) if gpus >= nproc else ""
            result = run_recbole_genrec(model, args.dataset, config_dict={
                **settings, "epochs": args.epochs, "nproc": nproc, "gpu_id": gpu_id, "state": "WARNING"})
            rows.append({
                "model": model, "processes": nproc, "device": "GPU" if gpu_id else f"CPU x{threads} threads",
                "epochs": result["epochs"], "s/epoch": result["train_seconds"] / max(1, result["epochs"]),
                "test users": result["test_users"], "test eval s": result["test_eval_seconds"],
                "users/s": result["test_users"] / result["test_eval_seconds"],
                "recall@10": result["test_result"].get("recall@10"), "ndcg@10": result["test_result"].get("ndcg@10"),
            })
            print(format_table(rows), flush=True)
    return rows


if __name__ == "__main__":
    main()
