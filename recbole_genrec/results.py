"""Side-by-side results: one row per run, printed as a table, written as CSV, drawn as a two-panel bar chart
(quality beside the papers' figures; training and ranking cost)."""
import csv
import os

from recbole_genrec.paths import PROPERTIES_DIR
from recbole_genrec.safety import load_config_yaml, parse_value


METRIC_ORDER = ("recall", "ndcg", "hit", "mrr", "precision", "map")


def flat_metrics(result):
    """{'recall@10': 0.1, ...} sorted by metric family then K."""
    if not result:
        return {}

    def order(key):
        name, _, k = key.partition("@")
        return (METRIC_ORDER.index(name) if name in METRIC_ORDER else 99, int(k or 0), name)

    return {key: float(result[key]) for key in sorted(result, key=order)}


def result_row(run):
    """Flatten one `run_recbole_genrec` result into a table row."""
    row = {"model": run["model"], "dataset": run["dataset"]}
    row.update({f"test_{k}": v for k, v in flat_metrics(run["test_result"]).items()})
    # Cold-start breakdown at the largest K only (the full breakdown is in the run's log and `test_cold_start`).
    cold_start = run.get("test_cold_start") or {}
    largest_k = max((int(key.rsplit("@", 1)[1]) for key in cold_start if "@" in key), default=None)
    for group in ("cold", "inset"):
        for key in sorted(k for k in cold_start if k.startswith(f"{group}_") and k.endswith(f"@{largest_k}")):
            row[f"test_{key}"] = float(cold_start[key])
    for key in ("cold_users", "cold_items", f"cold_items_in_top{largest_k}"):
        if key in cold_start:
            row[key] = cold_start[key]
    row["valid_score"] = float(run["best_valid_score"]) if run["best_valid_score"] is not None else None
    for key in ("epochs", "train_seconds", "test_eval_seconds", "test_users", "tokenizer_seconds", "parameters"):
        row[key] = run.get(key)
    return row


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return "-" if value is None else str(value)


def format_table(rows):
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [columns] + [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def read_csv(path):
    """Rows written by write_csv, values parsed back as the command line parses them (empty cells -> None)."""
    def parse(value):
        return None if value in ("", None) else parse_value(value)

    with open(path, newline="") as handle:
        return [{key: parse(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def format_markdown(rows, columns=None):
    """A Markdown table of `columns` (default: every key), numbers formatted as in the printed table."""
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(rows, path):
    columns = list(dict.fromkeys(key for row in rows for key in row))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def paper_figures():
    """The papers' published test figures at K=10 (properties/paper_figures.yaml):
    {(model, dataset): (recall@10, ndcg@10, source)}; source "secondary": a later paper's table, not the method's own."""
    figures = load_config_yaml(os.path.join(PROPERTIES_DIR, "paper_figures.yaml")) or {}
    return {(model, dataset): (figure["recall@10"], figure["ndcg@10"], figure["source"])
            for model, datasets in figures.items() for dataset, figure in datasets.items()}


PLOT_METRICS = ("recall", "ndcg")


def _plot_k(rows):
    """K of the plotted metrics: 10 when every row has it, else the largest K all rows share."""
    shared = set.intersection(*({int(key.rsplit("@", 1)[1]) for key in row if key.startswith("test_recall@")}
                                for row in rows))
    return 10 if 10 in shared else max(shared, default=None)


def plot_results(rows, path):
    """One bar group per model. Left: test Recall@10 and NDCG@10, the paper's figure marked where one exists for
    that model and dataset (`paper_figures`). Right: training seconds and test users ranked per second, on log
    scales (what a user weighs against quality). Rows are result_row's (or the benchmark script's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, dataset = _plot_k(rows), rows[0]["dataset"]
    labels = [str(row["model"]) for row in rows]
    positions = list(range(len(rows)))
    width = 0.38
    fig, (quality, training, ranking) = plt.subplots(
        1, 3, figsize=(max(10.0, 2.2 * len(rows) + 6), 4.4), gridspec_kw={"width_ratios": [2, 1, 1]})
    figures = paper_figures()
    tallest = 0.0
    for offset, metric in zip((-width / 2, width / 2), PLOT_METRICS):
        values = [row.get(f"test_{metric}@{k}") or 0.0 for row in rows]
        bars = quality.bar([p + offset for p in positions], values, width, label=f"{metric}@{k}")
        quality.bar_label(bars, fmt="%.3f", fontsize=7)
        tallest = max([tallest, *values])
        for position, row in zip(positions, rows):
            paper = figures.get((str(row["model"]).split()[0], row.get("dataset", dataset))) if k == 10 else None
            if paper is not None:
                marker = "*" if paper[2].startswith("paper") else "x"
                figure = paper[PLOT_METRICS.index(metric)]
                quality.plot(position + offset, figure, marker=marker, color="black", markersize=10, linestyle="none")
                tallest = max(tallest, figure)
    quality.plot([], [], marker="*", color="black", linestyle="none", label="paper's figure")
    quality.plot([], [], marker="x", color="black", linestyle="none", label="secondary source")
    quality.set_ylim(0, tallest * 1.35 or 1.0)  # room for the legend above the bars
    quality.set_xticks(positions, labels, rotation=20, ha="right")
    quality.set_ylabel("test score")
    quality.set_title(f"{dataset}: test quality (same split, RecBole metrics)", fontsize=10)
    quality.legend(fontsize=8, ncol=2, loc="upper left")
    for axis, values, title, colour, fmt in (
            (training, [row.get("train_seconds") or 0.0 for row in rows], "training seconds", "tab:gray", "%.0f"),
            (ranking, [_per_second(row) for row in rows], "test users ranked per second", "tab:green", "%.0f")):
        bars = axis.bar(positions, values, 0.6, color=colour)
        axis.bar_label(bars, fmt=fmt, fontsize=7)
        if any(value > 0 for value in values):
            axis.set_yscale("log")  # models differ by orders of magnitude here
        axis.set_xticks(positions, labels, rotation=20, ha="right")
        axis.set_title(title + " (log scale)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _per_second(row):
    """Test users ranked per second: the benchmark script's column, or test_users / test_eval_seconds."""
    from recbole_genrec.measure import per_second

    value = row.get("eval_users_per_s") or per_second(row.get("test_users"), row.get("test_eval_seconds"))
    return value or 0.0


def main(argv=None):
    """`python -m recbole_genrec.results RESULTS.csv [PLOT.png]`: a results CSV (the command line's --results_file,
    the benchmark script's tables) printed as a table and drawn again (default: the CSV's name with .png)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) > 2 or not args[0].endswith(".csv"):
        print("usage: python -m recbole_genrec.results RESULTS.csv [PLOT.png]", file=sys.stderr)
        return 2
    rows = read_csv(args[0])
    png = args[1] if len(args) > 1 else args[0][: -len(".csv")] + ".png"
    print(format_table(rows))
    plot_results(rows, png)
    print(f"Plot written to {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
