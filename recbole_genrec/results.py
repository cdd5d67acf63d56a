"""Side-by-side results: one row per run, printed as a table, written as CSV, drawn as a bar chart."""
import csv
import os

from recbole_genrec.quick_start import flat_metrics


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
    for key in ("epochs", "train_seconds", "test_eval_seconds", "tokenizer_seconds", "parameters"):
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
    from recbole_genrec.cli import parse_value

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


def plot_results(rows, path):
    """Grouped bar chart of the test metrics, one group per metric, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # overall test metrics only (not test_eval_seconds, not the cold-start / in-set breakdown)
    metrics = [key for key in rows[0] if key.startswith("test_") and "@" in key and "_" not in key[len("test_"):]]
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 2, 3.6))
    for i, row in enumerate(rows):
        positions = [m + i * width for m in range(len(metrics))]
        ax.bar(positions, [row.get(m) or 0.0 for m in metrics], width, label=row["model"])
    ax.set_xticks([m + width * (len(rows) - 1) / 2 for m in range(len(metrics))])
    ax.set_xticklabels([m[len("test_"):] for m in metrics])
    ax.set_ylabel("test score")
    ax.set_title(f"{rows[0]['dataset']}: test metrics (same split, RecBole metrics)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
