r"""One LIGER checkpoint's test split ranked each way `liger_inference` allows (no weight depends on it): the hybrid
(the beam's candidates + every cold-start item, re-ranked by the dense score), dense retrieval alone, the
generative beam alone.

    python benchmarks/liger_rankings.py saved/LIGER-<time>.pth [--beam_size=100] [--topk=5,10,20] \
        [--candidates=20,40,60,80,100]

Prints one line of test metrics per ranking (with the beam's share of codes naming no item among its top-k, from
the last test batch); chance for Recall@10 is 10 / the catalogue's items. `--beam_size` decodes with another beam
than the run's (an inference setting); `--topk` lists other cut-offs (the generative Recall@20 is the share of users
whose target is among the hybrid's 20 beam candidates); `--candidates` ranks the hybrid once per number of beam
candidates, as the official evaluation reports it for 20, 40, 60, 80 and 100 (src/training.py RETRIEVE_KEY).
"""
import argparse

import common  # noqa: F401  (puts this checkout's recbole_genrec on the path)


def main(argv=None):
    from recbole_genrec.quick_start import load_data, load_model
    from recbole_genrec.results import flat_metrics
    from recbole_genrec.trainer import GenRecTrainer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--beam_size", type=int, default=None)
    parser.add_argument("--topk", default=None, help="comma-separated cut-offs, e.g. 5,10,20")
    parser.add_argument("--candidates", default=None, help="comma-separated numbers of hybrid beam candidates")
    args = parser.parse_args(argv)
    checkpoint, config, dataset, train_data, _, test_data = load_data(args.checkpoint,
                                                                      config_dict={"state": "WARNING"})
    if args.beam_size:
        config["beam_size"] = args.beam_size
    if args.topk:
        config["topk"] = [int(k) for k in args.topk.split(",")]
    model = load_model(checkpoint, config, train_data)
    trainer = GenRecTrainer(config, model)
    print(f"{args.checkpoint}: {config['dataset']}, {dataset.item_num - 1} items (chance Recall@10 "
          f"{10 / (dataset.item_num - 1):.4f}), beam {model.beam_size}, {model.candidates} hybrid candidates")
    candidates = [int(k) for k in args.candidates.split(",")] if args.candidates else [model.candidates]
    if max(candidates) > model.beam_size:
        parser.error(f"--candidates: at most the beam ({model.beam_size}); raise --beam_size")
    rankings = [("hybrid", k) for k in candidates] + [("dense", None), ("generative", None)]
    for inference, k in rankings:
        model.inference, model.last_invalid_rate = inference, float("nan")
        if k is not None:
            model.candidates = k
        result = flat_metrics(trainer.evaluate(test_data, load_best_model=False, show_progress=False))
        name = inference if k is None else f"hybrid@{k}"
        print(f"{name:>10}: " + ", ".join(f"{key} {value:.4f}" for key, value in result.items())
              + f", invalid codes {model.last_invalid_rate:.3f}")


if __name__ == "__main__":
    main()
