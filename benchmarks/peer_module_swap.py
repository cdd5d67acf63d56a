r"""Which half separates our TIGER from cornac's: the model, or the pipeline that trains it?

cornac's TIGER module (`cornac.models.tiger.tiger.TIGERSeq2Seq`: HF T5Stack encoder and decoder, per-level heads,
learned BOS, its own one-user-at-a-time constrained beam) is trained and evaluated here by OUR pipeline: RecBole's
split and training loader, the plugin's trainer (AdamW, warm-up + cosine, validation NDCG@10 every epoch, best
checkpoint) and RecBole's metrics, with the settings and semantic IDs of `benchmarks/peers.py`. Beside the rows of
peers.py (our model in our pipeline, cornac's model in cornac's pipeline), a result near cornac's row points at our
model, one near ours at our pipeline.

    python benchmarks/peer_module_swap.py --seeds=3 --threads=2 --out=results/peers-ml100k-swap

Writes `<out>/peers.csv` in peers.py's format (implementation `cornac_module_in_recbole_genrec`); summarise with
`python benchmarks/peers.py --summarize=<csv>,...`. A diagnostic, not a method of the plugin.
"""
import argparse
import json
import os
import subprocess
import sys

import common  # noqa: F401  (this checkout's recbole_genrec first on the path)

IMPLEMENTATION = "cornac_module_in_recbole_genrec"


def swapped_tiger_class():
    """Our TIGER (semantic IDs, vocabulary, catalogue, trainer hooks) with cornac's module as the network."""
    from collections import defaultdict

    import torch
    from cornac.models.tiger.tiger import TIGERSeq2Seq

    from recbole_genrec.model.tiger import TIGER

    class CornacModuleTIGER(TIGER):
        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            del self.backbone  # cornac's module replaces it
            self.peer = TIGERSeq2Seq(
                level_sizes=self.vocab.vocab_sizes, d_model=config["d_model"], d_ff=config["d_ff"],
                num_heads=config["num_heads"], d_kv=config["d_kv"], num_enc_layers=config["num_encoder_layers"],
                num_dec_layers=config["num_decoder_layers"], dropout=config["dropout"])
            codes = self.item_codes[1:].tolist()
            children = [defaultdict(list) for _ in range(self.vocab.num_levels)]
            for row in codes:
                for level in range(len(row)):
                    if row[level] not in children[level][tuple(row[:level])]:
                        children[level][tuple(row[:level])].append(row[level])
            self.prefix_children = [dict(level) for level in children]
            self.item_of_code = {tuple(row): item for item, row in enumerate(codes, start=1)}

        def peer_inputs(self, interaction):
            """Our encoder tokens in cornac's layout (0 = pad, level tokens from 1; ours keep PAD and EOS first)."""
            tokens, mask = self.encoder_inputs(interaction)
            return torch.where(mask, tokens - (self.vocab.n_special - 1), 0), mask.float()

        def calculate_loss(self, interaction):
            tokens, mask = self.peer_inputs(interaction)
            return self.peer(tokens, mask, self.item_codes[interaction[self.POS_ITEM_ID]])

        def generate_topk(self, interaction, k):
            tokens, mask = self.peer_inputs(interaction)
            items = torch.full((len(tokens), k), -1, dtype=torch.long)
            scores = torch.full((len(tokens), k), float("-inf"))
            for row in range(len(tokens)):  # cornac's beam decodes one user at a time
                beams, log_probs = self.peer.generate_beam(tokens[row:row + 1], mask[row:row + 1], self.beam_size,
                                                           self.prefix_children)
                for rank, (code, score) in enumerate(list(zip(beams, log_probs))[:k]):
                    items[row, rank], scores[row, rank] = self.item_of_code[tuple(code)], float(score)
            return items.to(tokens.device), scores.to(tokens.device)

    # Checkpoints pickle the model class by reference (RecBole's Config names it) and are loaded through the plugin's
    # allow-list of model modules: the class lives in recbole_genrec.model.tiger for this process.
    from recbole_genrec.model import tiger as tiger_module

    CornacModuleTIGER.__module__ = tiger_module.__name__
    CornacModuleTIGER.__qualname__ = CornacModuleTIGER.__name__
    tiger_module.CornacModuleTIGER = CornacModuleTIGER
    return CornacModuleTIGER


def cornac_init_tiger_class(head_init=True, start_std=0.02):
    """Our TIGER with cornac's initialisation of what differs: with an untied head (`tie_embeddings: False`), the head
    at PyTorch's nn.Linear default (uniform, std about 0.07 at d64) instead of T5's std 1.0 (`head_init`), and the
    decoder's start vector (our PAD row, T5's std 1.0) at `start_std` like cornac's learned BOS (0.02; None keeps
    T5's)."""
    import math

    import torch
    from torch import nn

    from recbole_genrec.model.tiger import TIGER

    class CornacInitTIGER(TIGER):
        def __init__(self, config, dataset):
            super().__init__(config, dataset)
            backbone = self.backbone
            if head_init:
                assert backbone.lm_head is not None, "head_init needs tie_embeddings: False"
                nn.init.kaiming_uniform_(backbone.lm_head.weight, a=math.sqrt(5))
            if start_std is not None:
                with torch.no_grad():
                    backbone.embedding.weight[0].normal_(std=start_std)

    from recbole_genrec.model import tiger as tiger_module

    CornacInitTIGER.__module__ = tiger_module.__name__
    CornacInitTIGER.__qualname__ = CornacInitTIGER.__name__
    tiger_module.CornacInitTIGER = CornacInitTIGER
    return CornacInitTIGER


UNTIED_LEVEL = {"tie_embeddings": False, "sid_softmax": "level"}
# module -> (model class factory, settings on top of peers.py's TIGER settings)
MODULES = {"cornac": (swapped_tiger_class, {}),
           # cornac's output layer and its initialisation of the head and the start vector
           "ours_cornac_init": (cornac_init_tiger_class, UNTIED_LEVEL),
           # one part at a time: the head's initialisation alone, the start vector alone (T5's tied output layer)
           "ours_head_init": (lambda: cornac_init_tiger_class(head_init=True, start_std=None), UNTIED_LEVEL),
           "ours_small_start": (lambda: cornac_init_tiger_class(head_init=False, start_std=0.02), {})}


def one_row(seed, threads, quick=False, module="cornac"):
    import torch

    import peers
    from recbole_genrec import registry

    if threads:
        torch.set_num_threads(threads)
    make_class, overrides = MODULES[module]
    swapped, get_model = make_class(), registry.get_model
    registry.get_model = lambda name: swapped if name == "TIGER" else get_model(name)
    return peers.run_ours("TIGER", "ml-100k", peers.settings_for("TIGER", quick=quick, overrides=overrides), seed,
                          None)


def main(argv=None):
    import datetime

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=2020)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="results/peers-ml100k-swap")
    parser.add_argument("--quick", action="store_true", help="peers.py's --quick sizes (one epoch): a smoke run")
    parser.add_argument("--module", default="cornac", choices=sorted(MODULES),
                        help="cornac: cornac's TIGERSeq2Seq; ours_cornac_init: our EncoderDecoder with cornac's "
                             "output layer and initialisation of the head and the start vector; ours_head_init, "
                             "ours_small_start: one of the two")
    parser.add_argument("--row", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row is not None:
        print("SWAP_ROW " + json.dumps(one_row(args.row, args.threads, args.quick, args.module)))
        return
    import peers
    from recbole_genrec.measure import hardware

    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        implementation = IMPLEMENTATION if args.module == "cornac" else f"{args.module}_in_recbole_genrec"
        log = os.path.join(args.out, "logs", f"TIGER-{implementation}-{seed}.log")
        command = [sys.executable, os.path.abspath(__file__), f"--row={seed}", f"--module={args.module}"]
        command += [f"--threads={args.threads}"] * bool(args.threads) + ["--quick"] * args.quick
        with open(log, "w") as handle:
            subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=True)
        with open(log) as handle:
            line = next(line for line in handle if line.startswith("SWAP_ROW "))
        row = {**json.loads(line[len("SWAP_ROW "):]), "model": "TIGER", "implementation": implementation,
               "seed": seed, "dataset": "ml-100k", "threads": args.threads, "hardware": hardware(),
               "date": datetime.date.today().isoformat(),
               "command": "python benchmarks/peer_module_swap.py " + " ".join(argv or sys.argv[1:])}
        peers.append_csv(os.path.join(args.out, "peers.csv"), row)
        print(f"TIGER {implementation} seed {seed}: R@10 {row['recall@10']:.4f} N@10 {row['ndcg@10']:.4f}",
              flush=True)


if __name__ == "__main__":
    main()
