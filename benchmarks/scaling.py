r"""Cost against catalogue size: tokenizer fits, constraint tables, decoding and training from 10^4 to 10^6 items.

    python benchmarks/scaling.py                                   # 1e4, 1e5, 1e6 items; every stage and method
    python benchmarks/scaling.py --sizes=1e4,1e5 --stages=decode --methods=TIGER,SASRec --threads=16
    python benchmarks/scaling.py --quick                           # 1e3 items only (CI: tests/test_scaling.py)

Output: `benchmarks/results/scaling.csv` (`--out`; `--quick`: `scaling-quick.csv`), one row per (stage, method,
items, history, threads), each appended as soon as it is measured; rows already there are skipped, so an interrupted
run resumes (rows whose note starts with `error:` are measured again). Beside it one log-log plot per stage
(`scaling-<stage>.png`) and the fitted log-log slope of every curve (`scaling-slopes.csv`, also printed), then where
each generative decoder overtakes SASRec's full-sort scoring, or that it does not within the sizes.

**Data** (synthetic, in memory, deterministic by `--seed`; no atomic files are written). N items with 384-d text
vectors, the width of the default encoder (MiniLM): a two-level mixture of Gaussians on the unit sphere (32 topics;
about 2 sqrt(N) subtopics with power-law sizes, each centred near its topic; an item is its subtopic's centre plus
isotropic noise, normalised), so that a tokenizer sees clustered, text-like inputs. Behaviour (CF) vectors (64-d; 32-d
for LETTER) and "image" vectors (384-d) are random linear maps of the text vectors plus noise. Popularity is Zipf
(`--zipf`, exponent 1.0, items ranked in random order); a history draws each item from it, half of them from the
user's home topic. Cold items (LIGER's hybrid adds them to every candidate list): 0.3% of the catalogue, as a 5-core
dataset under leave-one-out has (amazon-beauty: 33 of 12,101).

**Stages and methods** (each row measures one of them alone):
- `tokenizer`: the project's tokenizer classes fitted on the N items. `RQ-KMeans` 3 x 256 (RQKMeansTokenizer, faiss);
  `RQ-VAE-epoch`, one epoch of RQVAETokenizer with properties/model/TIGER.yaml's parameters (the second of a 2-epoch
  fit: the first carries one-time costs), and `RQ-VAE-projected`, that fit at the yaml's 3,000 epochs (its k-means
  initialisation, encoding and first epoch as measured, + the other epochs at the measured epoch + the dead-code
  re-seeding passes those epochs run, one timed); `OPQ` (RPG.yaml's: 32 digits x 256, PCA whitening to 128; `--quick`
  shrinks it to 8 x 16 and 2 iterations, see QUICK_OPQ); `HKMeans-EAGER` (EAGER.yaml's tree: 128 branches, on the
  text vectors; EAGER fits a second tree on its CF vectors) and `HKMeans-ColaRec` (ColaRec.yaml's: 32 branches,
  subtree caps, on CF vectors); `LETTER-collisions`: LETTERTokenizer's Sinkhorn collision pass
  (`_resolve_collisions_by_sinkhorn`, LETTER.yaml's 4 x 256 network) on the codes of its network after the RQ-VAE's
  k-means initialisation, untrained (the note gives the colliding items before and after; a trained network collides
  less).
- `tables`: what decoding builds from the semantic IDs: the prefix tables of the constrained beam search
  (`PrefixConstraints`, per model: EAGER and MQL4GRec build one per stream / modality), RPG's k-NN item graph
  (`RPG.item_graph`, 200 edges) and, beside them, a faiss HNSW index (M 32) over SASRec's item embeddings:
  build seconds and bytes.
- `decode`: users/s of top-10 at beam 20 (RPG: 20 graph beams) for TIGER, LETTER, LIGER (hybrid: 20 beam
  candidates + cold items re-ranked densely), EAGER, ColaRec, MQL4GRec, RPG exact scoring and graph decoding, beside
  SASRec's full sort (RecBole's `full_sort_predict`: one matmul over all item embeddings, then top-10), SASRec's
  sequence encoder + a faiss exact inner-product index (`IndexFlatIP`) and + HNSW (efSearch 64; the note gives its
  recall@10 against the exact top-10). A warm-up batch, then batches of `--decode_batch` users until
  `--min_seconds` have passed (at least two).
- `train`: training sequences/s of the seq2seq (TIGER) and decoder-only (RPG) backbones at histories of 10, 20 and 50
  items: the model's own `calculate_loss`, backward, gradient clipping at the yaml's norm and an AdamW step on batches
  of `--train_batch` full-length histories (RPG: each row one user's sequence with the loss at all its positions, as
  `rpg_all_positions`; the note gives targets/s). TIGER's encoder reads 4 tokens per history item.

**Models and what is constructed directly.** Every model is its project class (`registry.get_model`) built with the
quick profile's widths (properties/quickstart.yaml through `cli.load_profile` and `GenRecConfig`; the dataset named
in the config, ml-100k or MQL4GRec's amazon-instruments-mm, is only where the settings are read from) on a synthetic
dataset object that offers what the constructors read (`num`, `semantic_ids`, `train_item_mask`, `inter_feat`), with
random weights (decoding cost does not depend on training). RecBole datasets are not built: at 10^6 items their
atomic files and loaders would dominate, and the models never read them at decoding. The item text and CF vectors the
constructors would read from the plugin's caches (LIGER, ColaRec: `item_text_embeddings`; EAGER: `stream_vectors`)
are the synthetic ones, handed in by replacing those module-level readers in the worker. Semantic IDs come from the
project's tokenizers with the quick profile's parameters, fitted on at most 65,536 items (all items assigned; HKMeans
trees on all items), cached under `--cache_dir`: TIGER and LIGER RQ-KMeans 3 x auto + digit; RPG OPQ 8 x 64
(`--quick`: 8 x 16); EAGER two HKMeans trees of 64 branches (behaviour and text), as tree-path codes; ColaRec an
HKMeans tree of 32 branches. Two stand-ins: LETTER's codes are RQ-KMeans with LETTER's quick level count, codebook
size and collision policy (its own tokenizer needs a trained CF model and 150 RQ-VAE epochs; the decoder sees only
the code table), and MQL4GRec's published codes are RQ-KMeans 4 x 256 on the text and on the image vectors with
`reassign_last_level`. EAGER cannot be built above 64^3 = 262,144 items at 64 branches (its node vocabulary cap,
`eager.MAX_NODE_VOCABULARY`): its rows say "not measurable" there.

**Big catalogues.** RPG's graph build is quadratic in time: N^2 similarities, one gather per digit, in chunks of at
most 2^24 (at 10^6 items: 16 items x N), so its memory is the graph's N x 200 edges plus a fixed block, but at
10^6 items it takes hours on a CPU (`--exclude=tables:RPG-graph` leaves it out; graph decoding then walks
random neighbours of the graph's shape, which cost the same per user). EAGER's last tree level names every node
(64^3 tokens from 4,097 items at 64 branches); its beam scores only each node's children and checks prefixes by
sorted keys, so neither its tables nor a beam step grows with that vocabulary (its node embedding table does).

**Processes and memory.** The parent imports no torch; one worker process per (stage, size) (`--isolate=method`: per
method) runs that stage's methods one after the other. Before each method the worker frees what it can and resets
the kernel's peak-RSS mark (`/proc/self/clear_refs`), so `peak_rss_mb` is the worker's resident baseline (Python,
torch, the inputs the method is given) plus that method's own peak; where the mark cannot be reset it is the process
peak so far (the note says so). A worker that dies (out of memory) leaves an `error:` row for the method it was
running, and the stage goes on with the next method in a fresh worker. `--threads` sets torch's and faiss's threads
(and OMP/MKL for the worker).
"""
import argparse
import csv
import json
import math
import os
import shlex
import subprocess
import sys
import time

import common

import yaml

STAGES = ("tokenizer", "tables", "decode", "train")
COLUMNS = ["stage", "method", "items", "history", "seconds", "users_per_s", "seq_per_s", "bytes", "peak_rss_mb",
           "threads", "hardware", "commit", "command", "note"]
RESULTS_DIR = os.path.join(common.ROOT, "benchmarks", "results")
CSV_PATH = os.path.join(RESULTS_DIR, "scaling.csv")
QUICK_CSV_PATH = os.path.join(RESULTS_DIR, "scaling-quick.csv")
PROPERTIES = os.path.join(common.ROOT, "properties")
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000,)
HISTORIES = (10, 20, 50)
TOPK, BEAM = 10, 20
NOT_MEASURABLE = "not measurable"

# The synthetic catalogue
TEXT_DIM, BEHAVIOUR_DIM, LETTER_CF_DIM = 384, 64, 32
TOPICS = 32
SUBTOPICS_PER_SQRT_ITEM = 2.0
SUBTOPIC_SIZE_EXPONENT = 0.8     # subtopic sizes ~ rank^-0.8
SUBTOPIC_SPREAD, ITEM_SPREAD = 0.8, 0.6   # noise norms around a topic / a subtopic centre (unit-norm centres)
LOCALITY = 0.5                   # share of a history's items drawn from the user's home topic
COLD_FRACTION = 0.003
FIT_SAMPLE = 65_536              # items the decoding stages' quantisers (RQ-KMeans, OPQ) are fitted on at most
HNSW_M, HNSW_EF_SEARCH = 32, 64
GRAPH_BUILD_MAX = 100_000        # decode without the tables stage's cached graph: build it up to this size
# --quick only: OPQ fits shrunk to CI's budget (faiss trains 50 OPQ rotations and, for IVF-PQ, polysemous codes,
# seconds that do not shrink with the catalogue: RPG.yaml's 32 x 256 took 107 s on 1,000 items on one loaded core)
QUICK_OPQ = {"num_digits": 8, "codebook_size": 16, "opq_niter": 2, "pq_niter": 2}

# stage -> {method: (the models it belongs to, for --methods; the rows it writes)}
METHODS = {
    "tokenizer": {
        "RQ-KMeans": (("TIGER", "LIGER"), ("RQ-KMeans",)),
        "RQ-VAE": (("TIGER", "LIGER"), ("RQ-VAE-epoch", "RQ-VAE-projected")),
        "OPQ": (("RPG",), ("OPQ",)),
        "HKMeans-EAGER": (("EAGER",), ("HKMeans-EAGER",)),
        "HKMeans-ColaRec": (("ColaRec",), ("HKMeans-ColaRec",)),
        "LETTER-collisions": (("LETTER",), ("LETTER-collisions",)),
    },
    "tables": {
        "prefix-TIGER": (("TIGER", "LIGER"), ("prefix-TIGER",)),
        "prefix-LETTER": (("LETTER",), ("prefix-LETTER",)),
        "prefix-EAGER": (("EAGER",), ("prefix-EAGER",)),
        "prefix-ColaRec": (("ColaRec",), ("prefix-ColaRec",)),
        "prefix-MQL4GRec": (("MQL4GRec",), ("prefix-MQL4GRec",)),
        "RPG-graph": (("RPG",), ("RPG-graph",)),
        "faiss-HNSW": (("SASRec",), ("faiss-HNSW",)),
    },
    "decode": {
        "TIGER": (("TIGER",), ("TIGER",)),
        "LETTER": (("LETTER",), ("LETTER",)),
        "LIGER-hybrid": (("LIGER",), ("LIGER-hybrid",)),
        "EAGER": (("EAGER",), ("EAGER",)),
        "ColaRec": (("ColaRec",), ("ColaRec",)),
        "MQL4GRec": (("MQL4GRec",), ("MQL4GRec",)),
        "RPG-exact": (("RPG",), ("RPG-exact",)),
        "RPG-graph": (("RPG",), ("RPG-graph",)),
        "SASRec-fullsort": (("SASRec",), ("SASRec-fullsort",)),
        "SASRec-faiss-IP": (("SASRec",), ("SASRec-faiss-IP",)),
        "SASRec-faiss-HNSW": (("SASRec",), ("SASRec-faiss-HNSW",)),
    },
    "train": {
        "TIGER": (("TIGER",), ("TIGER",)),
        "RPG": (("RPG",), ("RPG",)),
    },
}
# decode method -> (model class, semantic-ID kind, settings on top of the quick profile)
DECODERS = {
    "TIGER": ("TIGER", "rq3", {"beam_size": BEAM}),
    "LETTER": ("LETTER", "rq4", {"beam_size": BEAM}),
    "LIGER-hybrid": ("LIGER", "rq3", {"beam_size": BEAM, "liger_candidates": BEAM, "liger_inference": "hybrid"}),
    "EAGER": ("EAGER", "hk-eager", {"beam_size": BEAM}),
    "ColaRec": ("ColaRec", "hk-colarec", {"beam_size": BEAM}),
    "MQL4GRec": ("MQL4GRec", "mql", {"beam_size": BEAM}),
    "RPG-exact": ("RPG", "opq", {"num_beams": BEAM, "rpg_inference": "exact"}),
    "RPG-graph": ("RPG", "opq", {"num_beams": BEAM, "rpg_inference": "graph"}),
    "SASRec-fullsort": ("SASRec", None, {}),
    "SASRec-faiss-IP": ("SASRec", None, {}),
    "SASRec-faiss-HNSW": ("SASRec", None, {}),
}
TRAINERS = {"TIGER": ("TIGER", "rq3"), "RPG": ("RPG", "opq")}
# tables method -> semantic-ID kind of its prefix tables
PREFIX_TABLES = {"prefix-TIGER": "rq3", "prefix-LETTER": "rq4", "prefix-EAGER": "hk-eager",
                 "prefix-ColaRec": "hk-colarec", "prefix-MQL4GRec": "mql"}
GENERATIVE = ("TIGER", "LETTER", "LIGER-hybrid", "EAGER", "ColaRec", "MQL4GRec", "RPG-exact", "RPG-graph")
FULL_SORT = "SASRec-fullsort"


# ---- the parent: plan, run workers, plot ----------------------------------------------------------------------
def parse_sizes(text):
    sizes = sorted({int(float(part)) for part in str(text).split(",") if part.strip()})
    if not sizes or min(sizes) < 2:
        raise SystemExit(f"--sizes: give item counts >= 2, e.g. 1e4,1e5,1e6 (got {text!r})")
    return sizes


def matches(stage, method, names):
    """Whether a --methods / --exclude name names this method of `stage`: its method, row or model name, case
    insensitive, optionally as `stage:name` (`tables:RPG-graph` is the graph build only, not graph decoding)."""
    models, rows = METHODS[stage][method]
    own = {method.lower(), *(m.lower() for m in models), *(r.lower() for r in rows)}
    for name in names:
        where, _, what = name.lower().rpartition(":")
        if (not where or where == stage) and what in own:
            return True
    return False


def selected_methods(stage, filters, excluded=()):
    """The methods of `stage` that --methods names (all without it) and --exclude does not."""
    return [method for method in METHODS[stage]
            if (not filters or matches(stage, method, filters)) and not matches(stage, method, excluded)]


def quick_profile():
    with open(os.path.join(PROPERTIES, "quickstart.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def decode_history(method, profile):
    model = DECODERS[method][0]
    section = (profile.get("per_model") or {}).get(model) or {}
    return int(section.get("MAX_ITEM_LIST_LENGTH", profile["MAX_ITEM_LIST_LENGTH"]))


def row_history(stage, method, history, profile):
    if stage == "train":
        return str(history)
    return str(decode_history(method, profile)) if stage == "decode" else ""


def row_key(row):
    return (row["stage"], row["method"], str(row["items"]), str(row["history"]), str(row["threads"]))


def read_rows(path):
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def finished(row):
    """A measured row, or one that cannot be measured (kept); `error:` rows are measured again."""
    return bool(row.get("seconds")) or (row.get("note") or "").startswith(NOT_MEASURABLE)


def plan(args, profile):
    """Jobs still to measure: [(size, stage, method, history)] in size, stage, method order."""
    done = {row_key(row) for row in read_rows(args.out) if finished(row)}
    jobs = []
    for size in args.sizes:
        for stage in args.stages:
            for method in selected_methods(stage, args.methods, args.exclude):
                for history in (HISTORIES if stage == "train" else (None,)):
                    keys = [(stage, name, str(size), row_history(stage, method, history, profile), str(args.threads))
                            for name in METHODS[stage][method][1]]
                    if not all(key in done for key in keys):
                        jobs.append((size, stage, method, history))
    return jobs


def append_row(path, row):
    new = not os.path.isfile(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({key: row.get(key, "") for key in COLUMNS})


def run_workers(args, jobs, profile):
    """One worker per (size, stage), or per method with --isolate=method. A worker that dies leaves an error row
    for the job it was on; the rest of its jobs go to a fresh worker."""
    groups = {}
    for job in jobs:
        size, stage, method, _ = job
        groups.setdefault((size, stage) + ((method,) if args.isolate == "method" else ()), []).append(job)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([common.ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)}
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[variable] = str(args.threads)
    for (size, stage, *_), group in groups.items():
        remaining = list(group)
        while remaining:
            spec = {"stage": stage, "items": size,
                    "jobs": [[method, history, row_history(stage, method, history, profile)]
                             for _, _, method, history in remaining],
                    **{key: getattr(args, key) for key in ("out", "cache_dir", "seed", "threads", "zipf", "quick",
                                                           "decode_users", "decode_batch", "train_batch",
                                                           "min_seconds", "max_calls")},
                    "commit": args.commit, "command": args.command}
            print(f"[scaling] {stage} at {size:,} items: {', '.join(sorted({j[2] for j in remaining}))}", flush=True)
            start, rows_before = time.time(), len(read_rows(args.out))
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(spec)],
                                  cwd=common.ROOT, env=env)
            print(f"[scaling] {stage} at {size:,} items: worker done in {time.time() - start:.1f} s "
                  f"(exit {proc.returncode})", flush=True)
            left = not_written(args, remaining, profile, rows_before)
            if proc.returncode == 0 or not left:
                break
            _, _, method, history = left[0]  # the job the worker died on
            why = "killed (out of memory?)" if proc.returncode < 0 else f"exit code {proc.returncode}"
            for name in METHODS[stage][method][1]:
                append_row(args.out, {"stage": stage, "method": name, "items": size,
                                      "history": row_history(stage, method, history, profile),
                                      "threads": args.threads, "commit": args.commit, "command": args.command,
                                      "note": f"error: the worker died ({why}) while measuring this method"})
            remaining = left[1:]


def not_written(args, jobs, profile, rows_before):
    """Those of `jobs` the worker wrote no row for (rows after the first `rows_before` of the CSV)."""
    done = {row_key(row) for row in read_rows(args.out)[rows_before:]}
    left = []
    for job in jobs:
        size, stage, method, history = job
        keys = [(stage, name, str(size), row_history(stage, method, history, profile), str(args.threads))
                for name in METHODS[stage][method][1]]
        if not all(key in done for key in keys):
            left.append(job)
    return left


# ---- slopes, crossover, plots (the parent, from the CSV) ---------------------------------------------------------
def number(value):
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) and result > 0 else None


def log_slope(points):
    """Least-squares slope of log10 y against log10 x, or None with fewer than two distinct x."""
    points = sorted(points)
    if len({x for x, _ in points}) < 2:
        return None
    xs = [math.log10(x) for x, _ in points]
    ys = [math.log10(y) for _, y in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
            / sum((x - mean_x) ** 2 for x in xs))


# stage -> [(quantity, x column, grouping columns)]
CURVES = {
    "tokenizer": [("seconds", "items", ()), ("peak_rss_mb", "items", ())],
    "tables": [("seconds", "items", ()), ("bytes", "items", ()), ("peak_rss_mb", "items", ())],
    "decode": [("users_per_s", "items", ()), ("peak_rss_mb", "items", ())],
    "train": [("seq_per_s", "history", ("items",)), ("seq_per_s", "items", ("history",))],
}


def curves(rows, stage, quantity, x_column, group_columns):
    """{(method, threads, group...): [(x, y)]} of the measured rows of `stage`."""
    found = {}
    for row in rows:
        if row["stage"] != stage:
            continue
        x, y = number(row[x_column]), number(row[quantity])
        if x is None or y is None:
            continue
        key = (row["method"], row["threads"], *(f"{column}={row[column]}" for column in group_columns))
        found.setdefault(key, []).append((x, y))
    return found


def slopes(rows):
    table = []
    for stage, specs in CURVES.items():
        for quantity, x_column, group_columns in specs:
            for (method, threads, *group), points in curves(rows, stage, quantity, x_column, group_columns).items():
                slope = log_slope(points)
                xs = sorted({x for x, _ in points})
                table.append({"stage": stage, "method": method, "quantity": quantity, "against": x_column,
                              "group": " ".join(group), "threads": threads, "points": len(points),
                              "x_range": f"{xs[0]:g}-{xs[-1]:g}",
                              "slope": "" if slope is None else f"{slope:.3f}"})
    return table


def write_slopes(path, table):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["stage", "method", "quantity", "against", "group", "threads",
                                                    "points", "x_range", "slope"])
        writer.writeheader()
        writer.writerows(table)


def crossover_lines(rows):
    """Where each generative decoder's users/s first reaches SASRec's full sort, per thread count."""
    lines = []
    decode = curves(rows, "decode", "users_per_s", "items", ())
    for threads in sorted({key[1] for key in decode}):
        full = dict(decode.get((FULL_SORT, threads), []))
        if not full:
            continue
        for method in GENERATIVE:
            points = dict(decode.get((method, threads), []))
            common_sizes = sorted(set(points) & set(full))
            if not common_sizes:
                continue
            ratio = [(n, points[n] / full[n]) for n in common_sizes]
            where = next((i for i, (_, r) in enumerate(ratio) if r >= 1.0), None)
            label = f"{method} vs {FULL_SORT} ({threads} threads)"
            if where == 0:
                lines.append(f"{label}: faster already at the smallest size, {ratio[0][0]:,.0f} items "
                             f"({ratio[0][1]:.2f}x)")
            elif where is not None:
                (n1, r1), (n2, r2) = ratio[where - 1], ratio[where]
                cross = 10 ** (math.log10(n1) + (0 - math.log10(r1)) * (math.log10(n2) - math.log10(n1))
                               / (math.log10(r2) - math.log10(r1)))
                lines.append(f"{label}: overtakes between {n1:,.0f} and {n2:,.0f} items (about {cross:,.0f} by "
                             f"log-log interpolation; {r1:.2f}x -> {r2:.2f}x)")
            else:
                slope_g, slope_f = log_slope(list(points.items())), log_slope(list(full.items()))
                text = (f"{label}: does not overtake within {common_sizes[0]:,.0f}-{common_sizes[-1]:,.0f} items "
                        f"(at most {max(r for _, r in ratio):.2f}x)")
                if slope_g is not None and slope_f is not None and slope_g > slope_f:
                    n_last, r_last = ratio[-1]
                    cross = n_last * 10 ** (-math.log10(r_last) / (slope_g - slope_f))
                    text += f"; the fitted slopes ({slope_g:.2f} vs {slope_f:.2f}) extrapolate to about {cross:,.0f}"
                elif slope_g is not None and slope_f is not None:
                    text += f"; the fitted slopes ({slope_g:.2f} vs {slope_f:.2f}) do not converge"
                lines.append(text)
    return lines


PLOT_LABELS = {"seconds": "seconds", "peak_rss_mb": "peak RSS (MB)", "bytes": "bytes", "users_per_s": "users/s",
               "seq_per_s": "training sequences/s"}


def plot(rows, out_stem):
    """One PNG per stage with measured rows, log-log, one panel per quantity; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    colours = plt.get_cmap("tab20").colors
    methods = sorted({row["method"] for row in rows})
    for stage, specs in CURVES.items():
        if stage == "train":
            specs = specs[:1] + [("peak_rss_mb", "history", ("items",))]
        if not any(row["stage"] == stage and number(row[specs[0][0]]) for row in rows):
            continue
        figure, axes = plt.subplots(1, len(specs), figsize=(6.5 * len(specs), 4.8), squeeze=False)
        for axis, (quantity, x_column, group_columns) in zip(axes[0], specs):
            for key, points in sorted(curves(rows, stage, quantity, x_column, group_columns).items()):
                points.sort()
                method, threads, *group = key
                label = " ".join([method, *group]) + (f" ({threads} thr)" if len({r["threads"] for r in rows}) > 1
                                                      else "")
                index = methods.index(method)
                baseline = method.startswith("SASRec") or method == "faiss-HNSW"
                axis.plot([x for x, _ in points], [y for _, y in points], "--" if baseline else "-",
                          marker="s" if baseline else "o^vD<>"[index % 6], color=colours[index % len(colours)],
                          label=label)
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel("items in the catalogue" if x_column == "items" else "history length (items)")
            axis.set_ylabel(PLOT_LABELS[quantity])
            axis.grid(True, which="both", alpha=0.3)
            if axis.get_lines():
                axis.legend(fontsize=7)
        figure.suptitle(f"recbole_genrec scaling: {stage}")
        figure.tight_layout()
        path = f"{out_stem}-{stage}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


def report(args):
    rows = read_rows(args.out)
    stem = os.path.splitext(args.out)[0]
    table = slopes(rows)
    write_slopes(f"{stem}-slopes.csv", table)
    fitted = [entry for entry in table if entry["slope"]]
    print(f"[scaling] log-log slopes ({stem}-slopes.csv; {len(table) - len(fitted)} curve(s) with one point "
          f"have none):")
    for entry in fitted:
        group = f" [{entry['group']}]" if entry["group"] else ""
        print(f"  {entry['stage']:9s} {entry['method']:20s} {entry['quantity']:11s} vs {entry['against']:7s}"
              f"{group}: {entry['slope']:>7s}  ({entry['points']} points, {entry['x_range']})")
    lines = crossover_lines(rows)
    print("[scaling] generative decoding against full-sort scoring:")
    for line in lines or ["no decode rows with both a generative method and SASRec-fullsort"]:
        print(f"  {line}")
    for path in plot(rows, stem):
        print(f"[scaling] wrote {path}")
    errors = [row for row in rows if (row.get("note") or "").startswith("error:")]
    if errors:
        print(f"[scaling] {len(errors)} row(s) failed (rerun to retry): "
              + ", ".join(f"{r['stage']}/{r['method']}@{r['items']}" for r in errors))
    return table, lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--_worker"]:
        return worker(json.loads(argv[1]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=None, help="item counts, e.g. 1e4,1e5,1e6 (default; --quick: 1e3)")
    parser.add_argument("--quick", action="store_true", help="1e3 items, short timings: the CI check")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"of {','.join(STAGES)}")
    parser.add_argument("--methods", default="", help="method or model names (e.g. TIGER,RPG-graph,SASRec); "
                                                      "stage:name for one stage's (tables:RPG-graph)")
    parser.add_argument("--exclude", default="", help="names as --methods, left out")
    parser.add_argument("--threads", type=int, default=None, help="torch/faiss threads (default: the usable cores)")
    parser.add_argument("--out", default=None, help=f"CSV (default {os.path.relpath(CSV_PATH, common.ROOT)})")
    parser.add_argument("--cache_dir", default=None, help="semantic IDs, graph and index (default: <out>-cache)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--zipf", type=float, default=1.0, help="popularity exponent")
    parser.add_argument("--decode_users", type=int, default=None,
                        help="distinct histories decoded (default 2048; --quick 64)")
    parser.add_argument("--decode_batch", type=int, default=None,
                        help="users per decoding batch (default 256; --quick 32)")
    parser.add_argument("--train_batch", type=int, default=None,
                        help="sequences per training step (default 256; --quick 32)")
    parser.add_argument("--min_seconds", type=float, default=None,
                        help="timed seconds per row at least (default 5; --quick 0.1)")
    parser.add_argument("--max_calls", type=int, default=50, help="timed batches or steps per row at most")
    parser.add_argument("--isolate", choices=("stage", "method"), default="stage",
                        help="one worker per (stage, size) or per (stage, size, method)")
    parser.add_argument("--report_only", action="store_true", help="slopes, crossover and plots of the CSV only")
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = parse_sizes(args.sizes) if args.sizes else list(QUICK_SIZES if quick else DEFAULT_SIZES)
    args.stages = [stage.strip() for stage in args.stages.split(",") if stage.strip()]
    unknown = [stage for stage in args.stages if stage not in STAGES]
    if unknown:
        raise SystemExit(f"--stages: unknown {unknown}; choose among {', '.join(STAGES)}")
    for option in ("methods", "exclude"):
        names = [name.strip() for name in getattr(args, option).split(",") if name.strip()]
        unknown = [name for name in names if not any(matches(stage, method, [name]) for stage in STAGES
                                                     for method in METHODS[stage])]
        if unknown:
            raise SystemExit(f"--{option}: unknown {unknown}; methods: "
                             + "; ".join(f"{stage}: {', '.join(METHODS[stage])}" for stage in STAGES))
        setattr(args, option, names)
    if args.threads is None:
        args.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    args.out = os.path.abspath(args.out or (QUICK_CSV_PATH if quick else CSV_PATH))
    args.cache_dir = os.path.abspath(args.cache_dir or os.path.splitext(args.out)[0] + "-cache")
    defaults = {"decode_users": (64, 2048), "decode_batch": (32, 256), "train_batch": (32, 256),
                "min_seconds": (0.1, 5.0)}
    for key, (quick_value, value) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick_value if quick else value)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    os.makedirs(args.cache_dir, exist_ok=True)
    args.commit = common.commit("recbole_genrec", "properties", "benchmarks/scaling.py")
    args.command = shlex.join(["python", "benchmarks/scaling.py", *argv])
    profile = quick_profile()
    if not args.report_only:
        jobs = plan(args, profile)
        print(f"[scaling] {len(jobs)} job(s) to measure into {args.out} ({args.threads} threads)", flush=True)
        run_workers(args, jobs, profile)
    report(args)
    return 0


# ---- the worker: one stage at one size ---------------------------------------------------------------------------
class NotMeasurable(Exception):
    """A method that cannot run at this size by its own rules (written as a row, not retried)."""


def worker(spec):
    import traceback

    threads = int(spec["threads"])
    import torch

    torch.set_num_threads(threads)
    import faiss

    faiss.omp_set_num_threads(threads)
    import recbole_genrec  # noqa: F401  (the compatibility shims first)
    from recbole_genrec.measure import hardware

    patch_representations()
    context = Context(spec)
    hardware_line = hardware()
    stage = spec["stage"]
    for method, history, history_column in spec["jobs"]:
        base = {"stage": stage, "items": spec["items"], "history": history_column, "threads": threads,
                "hardware": hardware_line, "commit": spec["commit"], "command": spec["command"]}
        names = METHODS[stage][method][1]
        start = time.time()
        try:
            rows = STAGE_RUNNERS[stage](context, method, history)
        except NotMeasurable as error:
            rows = [{"method": name, "note": f"{NOT_MEASURABLE}: {error}"} for name in names]
        except Exception as error:  # one method's failure is a row; the others still run
            traceback.print_exc()
            message = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            rows = [{"method": name, "note": f"error: {message}"} for name in names]
        for row in rows:
            row.setdefault("peak_rss_mb", context.peak_mb())
            append_row(spec["out"], {**base, **row})
        print(f"[scaling]   {stage} {method}"
              f"{f' history {history}' if history else ''} at {spec['items']:,} items: "
              + "; ".join(f"{row['method']} {describe(row)}" for row in rows) + f" ({time.time() - start:.1f} s)",
              flush=True)
        context.release()
    return 0


def describe(row):
    for key, unit in (("users_per_s", "users/s"), ("seq_per_s", "seq/s")):
        if row.get(key):
            return f"{float(row[key]):,.1f} {unit}"
    if row.get("seconds"):
        return f"{float(row['seconds']):.3f} s" + (f", {int(row['bytes']):,} bytes" if row.get("bytes") else "")
    return row.get("note", "")


def patch_representations():
    """The model constructors read item text and CF vectors from the plugin's caches (keyed by a RecBole dataset's
    files); here they are the synthetic dataset's own arrays."""
    from recbole_genrec.model import colarec, eager, liger

    liger.item_text_embeddings = colarec.item_text_embeddings = lambda config, dataset: dataset.text
    eager.stream_vectors = lambda config, dataset, train_dataset: {"behaviour": dataset.behaviour,
                                                                   "semantic": dataset.text}


# ---- synthetic data ---------------------------------------------------------------------------------------------
STREAMS = ("structure", "text", "behaviour", "letter_cf", "image", "popularity", "cold", "histories", "fit",
           "weights")


def rng(seed, n_items, stream, *extra):
    import numpy as np

    return np.random.default_rng([int(seed), int(n_items), STREAMS.index(stream), *map(int, extra)])


def unit_rows(x):
    import numpy as np

    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def catalogue_structure(n_items, seed):
    """(topic of each subtopic [S], subtopic of each item [N]): ~2 sqrt(N) subtopics, power-law sizes."""
    import numpy as np

    generator = rng(seed, n_items, "structure")
    n_sub = max(TOPICS, int(round(SUBTOPICS_PER_SQRT_ITEM * math.sqrt(n_items))))
    topic_of_sub = generator.integers(TOPICS, size=n_sub)
    weights = generator.permutation(np.arange(1, n_sub + 1, dtype=np.float64) ** -SUBTOPIC_SIZE_EXPONENT)
    sub_of_item = generator.choice(n_sub, size=n_items, p=weights / weights.sum())
    return topic_of_sub, sub_of_item


def text_vectors(n_items, seed, dim=TEXT_DIM, chunk=65_536):
    """float32 [N + 1, dim] on the unit sphere (row 0 = padding, zeros): topic centres, subtopics near them, items
    near their subtopic (isotropic Gaussian noise of norm ~ITEM_SPREAD, then normalised)."""
    import numpy as np

    topic_of_sub, sub_of_item = catalogue_structure(n_items, seed)
    generator = rng(seed, n_items, "text")
    topics = unit_rows(generator.standard_normal((TOPICS, dim)))
    subs = unit_rows(topics[topic_of_sub] + SUBTOPIC_SPREAD * unit_rows(generator.standard_normal((len(topic_of_sub),
                                                                                                    dim))))
    out = np.zeros((n_items + 1, dim), dtype=np.float32)
    for start in range(0, n_items, chunk):
        stop = min(start + chunk, n_items)
        noise = generator.standard_normal((stop - start, dim), dtype=np.float32) * (ITEM_SPREAD / math.sqrt(dim))
        out[1 + start:1 + stop] = unit_rows(subs[sub_of_item[start:stop]].astype(np.float32) + noise)
    return out


def mapped_vectors(text, seed, stream, dim, normalise, noise=0.5, chunk=65_536):
    """A random linear map of the text vectors plus noise: float32 [N + 1, dim], row 0 zeros."""
    import numpy as np

    n_items = len(text) - 1
    generator = rng(seed, n_items, stream)
    projection = (generator.standard_normal((text.shape[1], dim)) / math.sqrt(text.shape[1])).astype(np.float32)
    out = np.zeros((n_items + 1, dim), dtype=np.float32)
    for start in range(1, n_items + 1, chunk):
        stop = min(start + chunk, n_items + 1)
        mapped = text[start:stop] @ projection
        mapped += generator.standard_normal(mapped.shape, dtype=np.float32) * (noise / math.sqrt(dim))
        out[start:stop] = unit_rows(mapped) if normalise else mapped
    return out


def popularity(n_items, seed, exponent):
    """Zipf weights [N] (items ranked in random order), normalised."""
    import numpy as np

    ranks = rng(seed, n_items, "popularity").permutation(n_items) + 1
    weights = ranks.astype(np.float64) ** -float(exponent)
    return weights / weights.sum()


def histories(n_items, seed, exponent, count, length, stream_id=0):
    """int64 [count, length] item ids 1..N: each item from the Zipf popularity, with probability LOCALITY from the
    user's home topic (the topic of a first, global draw)."""
    import numpy as np

    topic_of_sub, sub_of_item = catalogue_structure(n_items, seed)
    topic_of_item = topic_of_sub[sub_of_item]
    weights = popularity(n_items, seed, exponent)
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    order = np.argsort(topic_of_item, kind="stable")
    sorted_topics, sorted_weights = topic_of_item[order], weights[order]
    within = np.cumsum(sorted_weights)
    starts = np.searchsorted(sorted_topics, sorted_topics, side="left")
    before = np.concatenate([[0.0], within])[starts]
    totals = np.zeros(TOPICS)
    np.add.at(totals, sorted_topics, sorted_weights)
    keys = sorted_topics + (within - before) / totals[sorted_topics]  # group t spans (t, t + 1]
    generator = rng(seed, n_items, "histories", stream_id, count, length)
    first = np.minimum(np.searchsorted(cdf, generator.random(count)), n_items - 1)
    home = topic_of_item[first]
    draws = generator.random((count, length))
    global_items = np.minimum(np.searchsorted(cdf, draws), n_items - 1)
    local_items = order[np.minimum(np.searchsorted(keys, home[:, None] + draws, side="right"), n_items - 1)]
    local = generator.random((count, length)) < LOCALITY
    return np.where(local, local_items, global_items).astype(np.int64) + 1


def train_item_mask(n_items, seed):
    """bool [N + 1]: items of the training split; a COLD_FRACTION of the catalogue is cold (row 0 False)."""
    import numpy as np

    mask = np.ones(n_items + 1, dtype=bool)
    mask[0] = False
    cold = rng(seed, n_items, "cold").choice(n_items, size=max(1, int(round(COLD_FRACTION * n_items))), replace=False)
    mask[cold + 1] = False
    return mask


# ---- the worker's context: inputs, semantic IDs, models, memory ------------------------------------------------
class SyntheticDataset:
    """What the model constructors read from a RecBole dataset, for a synthetic catalogue: `num`, the field names,
    `item_num`, `semantic_ids`, `train_item_mask`, `inter_feat` (the histories; ColaRec's negatives avoid them) and,
    through the replaced readers, `text` and `behaviour` vectors (computed when first read)."""

    def __init__(self, context, config, semantic_ids, history_rows):
        from recbole.data.interaction import Interaction
        import torch

        self.context, self.config = context, config
        self.uid_field, self.iid_field = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
        self.item_list_length_field = config["ITEM_LIST_LENGTH_FIELD"]
        self.item_num = context.n_items + 1
        self.semantic_ids = semantic_ids
        self.train_item_mask = train_item_mask(context.n_items, context.seed)
        items = torch.from_numpy(history_rows)
        self.user_num = len(items) + 1
        self.inter_feat = Interaction({
            self.uid_field: torch.arange(1, len(items) + 1),
            self.iid_field: items[:, -1],
            self.iid_field + config["LIST_SUFFIX"]: torch.cat([items[:, :-1], torch.zeros_like(items[:, :1])], 1),
            self.item_list_length_field: torch.full((len(items),), items.shape[1] - 1),
        })
        self._text = self._behaviour = None

    def num(self, field):
        return self.item_num if field == self.iid_field else self.user_num

    @property
    def text(self):
        if self._text is None:
            self._text = text_vectors(self.context.n_items, self.context.seed)
        return self._text

    @property
    def behaviour(self):
        if self._behaviour is None:
            self._behaviour = mapped_vectors(self.text, self.context.seed, "behaviour", BEHAVIOUR_DIM, False)
        return self._behaviour


class Context:
    def __init__(self, spec):
        self.spec = spec
        self.n_items, self.seed = int(spec["items"]), int(spec["seed"])
        self.cache_dir = spec["cache_dir"]
        self.peak_resettable = True

    # -- memory ---------------------------------------------------------------------------------------------
    def release(self):
        import ctypes
        import gc

        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass

    def reset_peak(self):
        """Free what can be freed, then reset the kernel's peak-RSS mark to the current RSS."""
        self.release()
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            self.peak_resettable = False

    def peak_mb(self):
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return round(int(line.split()[1]) / 1024.0, 1)
        except OSError:
            pass
        import resource

        self.peak_resettable = False
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)

    # -- inputs ---------------------------------------------------------------------------------------------
    def text(self):
        return text_vectors(self.n_items, self.seed)

    def histories(self, count, length, stream_id=0):
        return histories(self.n_items, self.seed, self.spec["zipf"], count, length, stream_id)

    def fit_mask(self):
        """None (all items) up to FIT_SAMPLE items, else a random FIT_SAMPLE of them."""
        import numpy as np

        if self.n_items <= FIT_SAMPLE:
            return None
        mask = np.zeros(self.n_items + 1, dtype=bool)
        mask[1 + rng(self.seed, self.n_items, "fit").choice(self.n_items, size=FIT_SAMPLE, replace=False)] = True
        return mask

    def cache(self, name):
        return os.path.join(self.cache_dir, f"{name}-{self.n_items}-seed{self.seed}")

    # -- semantic IDs of the decoding stages (the quick profile's tokenizers), cached ------------------------
    def semantic_ids(self, kind):
        from recbole_genrec.tokenization import SemanticIds

        path = self.cache(f"sid-{kind}") + ".pt"
        if os.path.isfile(path):
            return SemanticIds.load(path)
        semantic_ids = self.fit_semantic_ids(kind)
        temporary = f"{path}.{os.getpid()}.tmp"
        semantic_ids.save(temporary)
        os.replace(temporary, path)
        return SemanticIds.load(path)

    def fit_semantic_ids(self, kind):
        from recbole_genrec.cli import load_profile
        from recbole_genrec.model.eager import MAX_NODE_VOCABULARY
        from recbole_genrec.tokenization import (HierarchicalKMeansTokenizer, SemanticIds, build_tokenizer,
                                                 resolve_tokenizer_params, tree_path_codes)

        def fit(name, params, vectors, fit_mask):
            params = resolve_tokenizer_params(name, dict(params), self.n_items)
            return build_tokenizer(name, params).fit(vectors, fit_mask, seed=self.seed)

        if kind == "rq3":  # TIGER's (and LIGER's) RQ-KMeans
            return fit("RQKMeans", load_profile("TIGER")["tokenizer_params"], self.text(), self.fit_mask())
        if kind == "opq":  # RPG's
            params = {**load_profile("RPG")["tokenizer_params"], **(QUICK_OPQ if self.spec.get("quick") else {})}
            return fit("OPQ", params, self.text(), self.fit_mask())
        if kind == "rq4":  # LETTER's code table shape: its levels, codebook size and collision policy
            letter = load_profile("LETTER")["tokenizer_params"]
            params = {"num_levels": letter["num_levels"], "codebook_size": letter["codebook_size"],
                      "niter": load_profile("TIGER")["tokenizer_params"].get("niter", 25),
                      "collision": letter["collision"]}
            return fit("RQKMeans", params, self.text(), self.fit_mask())
        if kind == "mql":  # published 4 x code_num codes of each modality
            code_num = int(model_yaml("MQL4GRec")["code_num"])
            params = {"num_levels": 4, "codebook_size": code_num, "niter": 25, "collision": "reassign_last_level"}
            text = self.text()
            parts = {"text": fit("RQKMeans", params, text, self.fit_mask()),
                     "image": fit("RQKMeans", params, mapped_vectors(text, self.seed, "image", TEXT_DIM, True),
                                  self.fit_mask())}
            for part in parts.values():
                part.vocab_sizes = [code_num] * part.n_levels
            return SemanticIds.concat(parts)
        if kind == "hk-colarec":
            params = load_profile("ColaRec")["tokenizer_params"]
            return fit("HKMeans", params, mapped_vectors(self.text(), self.seed, "behaviour", BEHAVIOUR_DIM, False),
                       None)
        if kind == "hk-eager":
            params = load_profile("EAGER")["tokenizer_params"]
            branches = int(params["branches"])
            levels = HierarchicalKMeansTokenizer(**params).num_levels_for(self.n_items)
            if branches ** levels > MAX_NODE_VOCABULARY:
                raise NotMeasurable(f"EAGER's trees need {levels} levels of {branches} branches for {self.n_items:,} "
                                    f"items, {branches ** levels:,} node tokens, above its cap MAX_NODE_VOCABULARY "
                                    f"= {MAX_NODE_VOCABULARY:,} (EAGER.build_semantic_ids refuses such trees)")
            text = self.text()
            trees = {"behaviour": fit("HKMeans", params, mapped_vectors(text, self.seed, "behaviour",
                                                                        BEHAVIOUR_DIM, False), None),
                     "semantic": fit("HKMeans", params, text, None)}
            return SemanticIds.concat({stream: tree_path_codes(tree, branches=tree.vocab_sizes[0])
                                       for stream, tree in trees.items()})
        raise ValueError(f"unknown semantic-ID kind {kind}")

    # -- models ---------------------------------------------------------------------------------------------
    def config(self, model, overrides):
        from recbole_genrec.cli import load_profile
        from recbole_genrec.config import GenRecConfig

        dataset = "amazon-instruments-mm" if model == "MQL4GRec" else "ml-100k"
        settings = {**load_profile(model), "gpu_id": "", "show_progress": False, "seed": self.seed,
                    "sid_collapse": "warn", **overrides}
        return GenRecConfig(model=model, dataset=dataset, config_dict=settings)

    def model(self, model, kind, overrides, history_rows=None):
        """(config, synthetic dataset, model) of `model` with random weights (seeded), on the CPU."""
        import torch

        from recbole_genrec import registry

        config = self.config(model, overrides)
        semantic_ids = self.semantic_ids(kind) if kind else None
        if history_rows is None:
            history_rows = self.histories(min(self.spec["decode_users"], 4096), config["MAX_ITEM_LIST_LENGTH"] + 1,
                                          stream_id=1)
        dataset = SyntheticDataset(self, config, semantic_ids, history_rows)
        torch.manual_seed(self.seed)
        built = registry.get_model(model)(config, dataset)
        dataset._text = dataset._behaviour = None  # what a model keeps of them, it holds itself (as after a cache read)
        return config, dataset, built

    def batches(self, config, count, size, length, targets=False, stream_id=2, width=None):
        """RecBole Interactions of `count` histories of `length` items in batches of `size` (item_id_list padded to
        `width` columns, default `length`), with targets when asked."""
        import torch
        from recbole.data.interaction import Interaction

        rows = torch.from_numpy(self.histories(count, length + 1, stream_id))
        width = width or length
        history = torch.zeros(len(rows), width, dtype=torch.long)
        history[:, :length] = rows[:, :length]
        out = []
        for start in range(0, len(rows), size):
            stop = min(start + size, len(rows))
            fields = {config["USER_ID_FIELD"]: torch.arange(start + 1, stop + 1),
                      config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]: history[start:stop],
                      config["ITEM_LIST_LENGTH_FIELD"]: torch.full((stop - start,), length)}
            if targets:
                fields[config["ITEM_ID_FIELD"]] = rows[start:stop, length]
            out.append((Interaction(fields), stop - start))
        return out


def model_yaml(model):
    from recbole_genrec.safety import load_config_yaml

    return load_config_yaml(os.path.join(PROPERTIES, "model", f"{model}.yaml")) or {}


def timed(function, batches, min_seconds, max_calls, min_calls=2):
    """Run `function` on a warm-up batch, then on batches in turn until `min_seconds` passed (and `min_calls`
    calls, at most `max_calls`): (seconds, items processed, calls)."""
    function(batches[0][0])
    calls = count = 0
    start = time.perf_counter()
    while True:
        batch, size = batches[calls % len(batches)]
        function(batch)
        calls += 1
        count += size
        elapsed = time.perf_counter() - start
        if (elapsed >= min_seconds and calls >= min_calls) or calls >= max(max_calls, min_calls):
            return elapsed, count, calls


def rss_note(context):
    return "" if context.peak_resettable else "; peak RSS: the worker's peak so far (mark not resettable)"


# ---- stage: tokenizer ------------------------------------------------------------------------------------------
def run_tokenizer(context, method, history):
    import numpy as np
    import torch

    from recbole_genrec import tokenization

    text = context.text()
    n = context.n_items
    if method == "RQ-KMeans":
        params = {"num_levels": 3, "codebook_size": 256, "collision": "append_digit"}
        context.reset_peak()
        start = time.perf_counter()
        ids = tokenization.RQKMeansTokenizer(**params).fit(text, None, seed=context.seed)
        seconds = time.perf_counter() - start
        return [{"method": method, "seconds": seconds,
                 "note": f"3 x 256, niter {tokenization.RQKMeansTokenizer.default_params['niter']}, all {n:,} items; "
                         f"collision rate {ids.quality['collision_rate']:.3f} before the digit" + rss_note(context)}]
    if method == "RQ-VAE":
        params = dict(model_yaml("TIGER")["tokenizer_params"])
        epochs = int(params["epochs"])

        class TimedRQVAE(tokenization.RQVAETokenizer):
            """The project's RQ-VAE with a clock at every epoch start and at the end of training."""

            def _on_epoch_start(self, epoch, seed):
                self.epoch_starts.append(time.perf_counter())
                super()._on_epoch_start(epoch, seed)

            def _train(self, fit_inputs, seed):
                self.epoch_starts = []
                super()._train(fit_inputs, seed)
                self.train_end = time.perf_counter()

        # two epochs: the first carries one-time costs (first backward pass, optimiser state), the second is timed
        tokenizer = TimedRQVAE(**{**params, "epochs": 2})
        context.reset_peak()
        start = time.perf_counter()
        tokenizer.fit(text, None, seed=context.seed)
        seconds = time.perf_counter() - start
        peak = context.peak_mb()
        first_epoch = tokenizer.epoch_starts[1] - tokenizer.epoch_starts[0]
        epoch_seconds = tokenizer.train_end - tokenizer.epoch_starts[1]
        # the dead-code re-seeding the recipe's epochs run (one pass over the fit items each), timed once
        interval = int(params.get("dead_code_interval",
                                  tokenization.RQVAETokenizer.default_params["dead_code_interval"]))
        resets = sum(1 for epoch in range(epochs) if (epoch + 1) % interval == 0 and epoch + 1 + interval <= epochs)
        reset_seconds = 0.0
        if params.get("dead_code_reset", True) and resets:
            inputs = tokenizer._standardize(text[1:])
            begin = time.perf_counter()
            tokenizer.network.reset_dead_codes(inputs, torch.Generator().manual_seed(context.seed))
            reset_seconds = time.perf_counter() - begin
        rest = seconds - first_epoch - epoch_seconds  # k-means initialisation, encoding, quality report
        projected = rest + first_epoch + (epochs - 1) * epoch_seconds + resets * reset_seconds
        shape = f"{params['num_levels']} x {params['codebook_size']}, latent {params['latent_dim']}, batch " \
                f"{params['batch_size']}"
        return [{"method": "RQ-VAE-epoch", "seconds": epoch_seconds, "peak_rss_mb": peak,
                 "note": f"TIGER.yaml's RQ-VAE ({shape}), all {n:,} items: the second of a 2-epoch fit (the first "
                         f"{first_epoch:.3f} s; k-means init, encoding and one-time setup {rest:.3f} s)"
                         + rss_note(context)},
                {"method": "RQ-VAE-projected", "seconds": projected, "peak_rss_mb": peak,
                 "note": f"projected to TIGER.yaml's {epochs} epochs: init + encoding {rest:.3f} s + first epoch "
                         f"{first_epoch:.3f} s + {epochs - 1} x {epoch_seconds:.3f} s + {resets} dead-code "
                         f"re-seedings x {reset_seconds:.3f} s"}]
    if method == "OPQ":
        params = {**model_yaml("RPG")["tokenizer_params"], **(QUICK_OPQ if context.spec.get("quick") else {})}
        context.reset_peak()
        start = time.perf_counter()
        tokenization.OPQTokenizer(**params).fit(text, None, seed=context.seed)
        seconds = time.perf_counter() - start
        return [{"method": method, "seconds": seconds,
                 "note": f"RPG.yaml's OPQ{params['num_digits']} x {params['codebook_size']}, PCA whitening "
                         f"{params['pca_whiten_dim']}, fitted on all {n:,} items (RPG: the training items)"
                         + (f"; --quick: {QUICK_OPQ} over RPG.yaml's" if context.spec.get("quick") else "")
                         + rss_note(context)}]
    if method in ("HKMeans-EAGER", "HKMeans-ColaRec"):
        model = method.split("-")[1]
        params = dict(model_yaml(model)["tokenizer_params"])
        vectors = text if model == "EAGER" else mapped_vectors(text, context.seed, "behaviour", BEHAVIOUR_DIM, False)
        del text
        tokenizer = tokenization.HierarchicalKMeansTokenizer(**params)
        levels = tokenizer.num_levels_for(n)
        context.reset_peak()
        start = time.perf_counter()
        tokenizer.fit(vectors, None, seed=context.seed)
        seconds = time.perf_counter() - start
        what = "the text vectors (EAGER fits a second tree on its CF vectors)" if model == "EAGER" else \
            f"{BEHAVIOUR_DIM}-d CF vectors"
        return [{"method": method, "seconds": seconds,
                 "note": f"{model}.yaml's tree: {params['branches']} branches x {levels} levels, niter "
                         f"{params['niter']}, cluster_size_max {params.get('cluster_size_max', 'even')}, on {what}"
                         + rss_note(context)}]
    if method == "LETTER-collisions":
        params = dict(model_yaml("LETTER")["tokenizer_params"])
        tokenizer = tokenization.LETTERTokenizer(**params)
        collaborative = mapped_vectors(text, context.seed, "letter_cf", LETTER_CF_DIM, False)
        tokenizer.collaborative = collaborative[1:]
        items = text[1:]
        tokenizer.mean, tokenizer.std = tokenization.base.standardization_stats(items, np.ones(n, dtype=bool))
        tokenizer.fit_items = torch.arange(n)
        torch.manual_seed(context.seed)
        tokenizer.network = tokenizer._build_network(items.shape[1]).eval()
        inputs = tokenizer._standardize(items)
        tokenizer.network.initialize_codebooks_by_kmeans(inputs, context.seed)
        residuals, codes = tokenizer.network.level_residuals(inputs)
        codes = torch.stack(codes, 1).cpu()
        last = residuals[-1]
        del residuals, collaborative, text

        def colliding(table):
            _, group, sizes = torch.unique(table, dim=0, return_inverse=True, return_counts=True)
            return int((sizes[group] > 1).sum())

        before = colliding(codes)
        context.reset_peak()
        start = time.perf_counter()
        resolved = tokenizer._resolve_collisions_by_sinkhorn(last, codes.clone())
        seconds = time.perf_counter() - start
        return [{"method": method, "seconds": seconds,
                 "note": f"LETTER.yaml's {params['num_levels']} x {params['codebook_size']} network, k-means "
                         f"initialised, untrained; {params['collision_rounds']} rounds at most: {before:,} colliding "
                         f"items before, {colliding(resolved):,} after" + rss_note(context)}]
    raise ValueError(f"unknown tokenizer method {method}")


# ---- stage: tables ---------------------------------------------------------------------------------------------
def buffer_bytes(module):
    return sum(buffer.numel() * buffer.element_size() for buffer in module.buffers())


def column_parts(semantic_ids):
    """[(first, stop)] of each stream's / modality's columns (one part when the IDs are not a concatenation)."""
    parts = semantic_ids.quality.get("parts")
    if not parts:
        return [(0, semantic_ids.n_levels)]
    out, first = [], 0
    for part in parts.values():
        out.append((first, first + int(part["levels"])))
        first += int(part["levels"])
    return out


def rpg_graph_path(context):
    return context.cache("rpg-graph") + ".npy"


def hnsw_path(context):
    return context.cache("sasrec-hnsw") + ".faiss"


def sasrec_hnsw(item_embeddings):
    import faiss

    index = faiss.IndexHNSWFlat(item_embeddings.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.add(item_embeddings)
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def run_tables(context, method, history):
    import numpy as np

    from recbole_genrec.inference import PrefixConstraints

    if method in PREFIX_TABLES:
        semantic_ids = context.semantic_ids(PREFIX_TABLES[method])
        context.reset_peak()
        start = time.perf_counter()
        # EAGER decodes over each node's children with sorted prefix keys, without the bool tables (eager.py)
        dense = method != "prefix-EAGER"
        tables = [PrefixConstraints(semantic_ids.codes[:, a:b], semantic_ids.vocab_sizes[a:b], next_code_tables=dense)
                  for a, b in column_parts(semantic_ids)]
        seconds = time.perf_counter() - start
        shapes = "; ".join(f"levels {t.vocab_sizes}" for t in tables)
        return [{"method": method, "seconds": seconds, "bytes": sum(buffer_bytes(t) for t in tables),
                 "note": f"{len(tables)} PrefixConstraints ({shapes})" + rss_note(context)}]
    if method == "RPG-graph":
        context.semantic_ids("opq")
        context.reset_peak()
        config, _, model = context.model("RPG", "opq", {"num_beams": BEAM, "rpg_inference": "graph"})
        start = time.perf_counter()
        graph = model.item_graph()
        seconds = time.perf_counter() - start
        np.save(rpg_graph_path(context), graph.numpy().astype(np.int32))
        return [{"method": method, "seconds": seconds, "bytes": graph.numel() * graph.element_size(),
                 "note": f"RPG.item_graph: {config['num_edges']} edges per item, {model.n_digits} digits x "
                         f"{model.codebook_size} codes, chunks of {model.graph_chunk_size} items" + rss_note(context)}]
    if method == "faiss-HNSW":
        import faiss

        context.reset_peak()
        _, _, model = context.model("SASRec", None, {})
        embeddings = np.ascontiguousarray(model.item_embedding.weight.detach().numpy(), dtype=np.float32)
        start = time.perf_counter()
        index = sasrec_hnsw(embeddings)
        seconds = time.perf_counter() - start
        faiss.write_index(index, hnsw_path(context))
        return [{"method": method, "seconds": seconds, "bytes": int(faiss.serialize_index(index).nbytes),
                 "note": f"IndexHNSWFlat(M {HNSW_M}, inner product) over SASRec's {len(embeddings):,} x "
                         f"{embeddings.shape[1]} item embeddings (random weights)" + rss_note(context)}]
    raise ValueError(f"unknown tables method {method}")


# ---- stage: decode ---------------------------------------------------------------------------------------------
def run_decode(context, method, history):
    import numpy as np
    import torch

    model_name, kind, overrides = DECODERS[method]
    if kind:
        context.semantic_ids(kind)  # fitted and cached before the memory mark is reset
    context.reset_peak()
    config, dataset, model = context.model(model_name, kind, overrides)
    model.eval()
    length = int(config["MAX_ITEM_LIST_LENGTH"])
    spec = context.spec
    batches = context.batches(config, spec["decode_users"], spec["decode_batch"], length)
    notes = []
    if model_name == "SASRec":
        if method == "SASRec-fullsort":
            def rank(interaction):
                return model.full_sort_predict(interaction).topk(TOPK, dim=1)
        else:
            import faiss

            embeddings = np.ascontiguousarray(model.item_embedding.weight.detach().numpy(), dtype=np.float32)
            if method == "SASRec-faiss-IP":
                index = faiss.IndexFlatIP(embeddings.shape[1])
                index.add(embeddings)
            elif os.path.isfile(hnsw_path(context)):
                index = faiss.read_index(hnsw_path(context))
                index.hnsw.efSearch = HNSW_EF_SEARCH
            else:
                index = sasrec_hnsw(embeddings)
            item_seq = model.ITEM_SEQ

            def rank(interaction):
                states = model.forward(interaction[item_seq], interaction[model.ITEM_SEQ_LEN])
                return index.search(np.ascontiguousarray(states.numpy()), TOPK)

            if method == "SASRec-faiss-HNSW":
                exact = faiss.IndexFlatIP(embeddings.shape[1])
                exact.add(embeddings)
                hits = total = 0
                with torch.no_grad():
                    for interaction, _ in batches:
                        states = np.ascontiguousarray(
                            model.forward(interaction[item_seq], interaction[model.ITEM_SEQ_LEN]).numpy())
                        found, truth = index.search(states, TOPK)[1], exact.search(states, TOPK)[1]
                        hits += sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist()))
                        total += truth.size
                notes.append(f"HNSW M {HNSW_M}, efSearch {HNSW_EF_SEARCH}: recall@{TOPK} {hits / total:.3f} "
                             f"against the exact top-{TOPK} (random embeddings, a hard case for graphs)")
                del exact
    else:
        if method == "RPG-graph":
            weight = model.digit_embedding.weight
            path = rpg_graph_path(context)
            if os.path.isfile(path):
                graph = torch.from_numpy(np.load(path).astype(np.int64))
                notes.append("the k-NN graph of the tables stage (same seed and weights)")
            elif context.n_items <= GRAPH_BUILD_MAX:
                graph = model.item_graph()
                notes.append("the k-NN graph built here (not timed)")
            else:
                edges = min(int(config["num_edges"]), context.n_items - 1)
                generator = torch.Generator().manual_seed(context.seed)
                graph = torch.randint(1, context.n_items + 1, (context.n_items + 1, edges), generator=generator)
                notes.append("random neighbours of the graph's shape (the k-NN graph was not built: decoding cost "
                             "does not depend on which items are neighbours)")
            model._graph, model._graph_key = graph, (weight.data_ptr(), weight._version, weight.device)
            from recbole_genrec.inference import random_start_items

            begin = time.perf_counter()
            random_start_items(spec["decode_batch"], context.n_items, model.num_beams, model.graph_seed, "cpu")
            notes.append(f"start items ({spec['decode_batch']} x {model.num_beams} distinct of {context.n_items:,}, "
                         f"drawn once per evaluation batch size, in the warm-up): {time.perf_counter() - begin:.3f} s")
        if method == "LIGER-hybrid":
            with torch.no_grad():
                begin = time.perf_counter()
                model.text_projection(model.item_text)
                notes.append(f"cold items {len(model.cold_items):,}; the catalogue's text projection, computed "
                             f"once per evaluation (cached, in the warm-up): {time.perf_counter() - begin:.3f} s")
        if method == "EAGER":
            notes.append(f"node vocabularies {[v.vocab_sizes for v in model.vocab.values()]}")

        notes.append(f"codes {model.vocab_sizes}")

        def rank(interaction):
            return model.generate_topk(interaction, TOPK)

    def call(interaction):
        with torch.no_grad():
            rank(interaction)

    seconds, users, calls = timed(call, batches, spec["min_seconds"], spec["max_calls"])
    notes.insert(0, f"top-{TOPK}, beam {BEAM}; {users:,} users in {calls} batches of {spec['decode_batch']} after "
                    f"a warm-up batch; {sum(p.numel() for p in model.parameters()):,} parameters")
    return [{"method": method, "history": length, "seconds": seconds, "users_per_s": users / seconds,
             "note": "; ".join(notes) + rss_note(context)}]


# ---- stage: train ----------------------------------------------------------------------------------------------
def run_train(context, method, history):
    import torch

    model_name, kind = TRAINERS[method]
    history = int(history)
    context.semantic_ids(kind)
    context.reset_peak()
    # RPG: rows shorter than MAX_ITEM_LIST_LENGTH are whole sequences, scored at every position (rpg_all_positions)
    width = history + 1 if model_name == "RPG" else history
    config, _, model = context.model(model_name, kind, {"MAX_ITEM_LIST_LENGTH": width})
    model.train()
    spec = context.spec
    batches = context.batches(config, max(spec["train_batch"] * 2, 2), spec["train_batch"], history, targets=True,
                              stream_id=3, width=width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["learning_rate"]),
                                  weight_decay=float(config["weight_decay"] or 0.0))
    clip = (config["clip_grad_norm"] or {}).get("max_norm")

    def step(interaction):
        loss = model.calculate_loss(interaction)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    seconds, sequences, calls = timed(step, batches, spec["min_seconds"], spec["max_calls"])
    rate = sequences / seconds
    targets = f"; {rate * history:,.0f} targets/s (every position scored)" if model_name == "RPG" else \
        f"; {history * model.n_levels} encoder tokens per sequence"
    return [{"method": method, "history": history, "seconds": seconds, "seq_per_s": rate,
             "note": f"{sequences:,} sequences in {calls} steps of {spec['train_batch']} after a warm-up step "
                     f"(calculate_loss, backward, clip, AdamW); {sum(p.numel() for p in model.parameters()):,} "
                     f"parameters" + targets + rss_note(context)}]


STAGE_RUNNERS = {"tokenizer": run_tokenizer, "tables": run_tables, "decode": run_decode, "train": run_train}


if __name__ == "__main__":
    sys.exit(main())
