"""Evaluation seconds with and without the evaluator's cold-start split, on one (untrained) model.

    python benchmarks/cold_start_overhead.py --dataset=amazon-beauty --model=SASRec --repeats=3

Only the time matters here, so the model is not trained; repeats alternate off/on so drift hits both alike.
"""
import argparse
import time

import common  # noqa: F401  (this checkout's recbole_genrec first on the path)


def main(argv=None):
    import torch

    from recbole_genrec.quick_start import prepare_run
    from recbole_genrec.trainer import GenRecTrainer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--model", default="SASRec")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = {"state": "WARNING", "MAX_ITEM_LIST_LENGTH": 50, "hidden_size": 64, "eval_batch_size": 2048}
    config, _, model, _, _, test_data = prepare_run(args.model, args.dataset, None, settings)
    trainer = GenRecTrainer(config, model)
    seconds = {False: [], True: []}
    for _ in range(args.repeats):
        for cold_start in (False, True):
            trainer.config["cold_start_eval"] = cold_start
            start = time.perf_counter()
            trainer.evaluate(test_data, load_best_model=False)
            seconds[cold_start].append(time.perf_counter() - start)
    for cold_start, values in seconds.items():
        print(f"cold_start_eval {'on ' if cold_start else 'off'}: " + " / ".join(f"{v:.2f}" for v in values)
              + f" s (mean {sum(values) / len(values):.2f} s, {trainer.last_eval_users} users)")


if __name__ == "__main__":
    main()
