"""Command line: `python run_recbole_genrec.py --model=TIGER,SASRec --dataset=ml-100k --epochs=1`.

Every `--key=value` becomes a config override (values parsed as Python literals when possible, as RecBole does).
Options of the CLI itself: --model (comma-separated for a side-by-side run), --dataset, --config_files (comma- or
space-separated), --results_file (CSV; a PNG bar chart is written beside it)."""
import ast
import sys

CLI_OPTIONS = ("model", "dataset", "config_files", "results_file")


def parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("none", "null", "~"):
            return None
        return text


def parse_args(argv):
    options, overrides = {}, {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            raise SystemExit(f"Unexpected argument '{arg}': use --key=value.")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if not args or args[0].startswith("--"):
                raise SystemExit(f"Option --{key} needs a value: --{key}=VALUE.")
            value = args.pop(0)
        if key in CLI_OPTIONS:
            options[key] = value
        else:
            overrides[key] = parse_value(value)
    return options, overrides


def main(argv=None):
    from recbole_genrec.quick_start import run_recbole_genrec
    from recbole_genrec.results import format_table, plot_results, result_row, write_csv

    options, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    models = [m.strip() for m in options.get("model", "TIGER").split(",") if m.strip()]
    dataset = options.get("dataset", "ml-100k")
    config_files = [f for f in options.get("config_files", "").replace(",", " ").split() if f] or None

    from recbole_genrec import registry

    for model in models:  # fail before any training when one name is wrong
        registry.get_model(model)
    rows = []
    for model in models:
        result = run_recbole_genrec(model=model, dataset=dataset, config_file_list=config_files,
                                    config_dict=dict(overrides))
        rows.append(result_row(result))
    table = format_table(rows)
    print(f"\nTest results on {dataset} (leave-one-out, full ranking; scored by RecBole's metrics)\n{table}\n")
    results_file = options.get("results_file")
    if results_file:
        write_csv(rows, results_file)
        png = results_file.rsplit(".", 1)[0] + ".png"
        plot_results(rows, png)
        print(f"Results written to {results_file} and {png}")
    return rows


if __name__ == "__main__":
    main()
