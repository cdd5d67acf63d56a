"""Command line: `python run_recbole_genrec.py --model=TIGER,SASRec --dataset=ml-100k --epochs=1`.

Every `--key=value` becomes a config override (values parsed as Python literals when possible, as RecBole does).
Options of the CLI itself: --model (comma-separated for a side-by-side run), --dataset, --config_files (comma- or
space-separated), --results_file (CSV; a PNG bar chart is written beside it), --profile (a yaml of shared keys plus
`per_model:` sections applied under the overrides; `quickstart` = the CPU profile, the default when no --dataset
is given; `none` = the papers' defaults, the default otherwise).

Tuning mode (Ray Tune, see recbole_genrec/tuning.py and hyper/README.md):
`python run_recbole_genrec.py --model=TIGER --tune=hyper/TIGER.hyper --trials=20` with --trials (random search:
configurations, default 10; grid search: samples per grid point, default 1), --search=random|grid,
--ray_address (join a running cluster, e.g. auto or HOST:6379; default: a local Ray), --ray_num_cpus (local Ray),
--cpus_per_trial (default 1), --gpus_per_trial (default 0; fractions share a GPU), --max_concurrent,
--tune_dir (default ray_results/<model>-<dataset>-<time>), --scheduler=asha|fifo, --grace_period (evaluations a
trial runs before ASHA may stop it, default 1)."""
import ast
import os
import sys

QUICKSTART_PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "properties", "quickstart.yaml")

CLI_OPTIONS = ("model", "dataset", "config_files", "results_file", "profile")
TUNE_OPTIONS = ("tune", "trials", "search", "ray_address", "ray_num_cpus", "cpus_per_trial", "gpus_per_trial",
                "max_concurrent", "tune_dir", "scheduler", "grace_period")
CLI_OPTIONS += TUNE_OPTIONS


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


def resolve_profile(name):
    """--profile's value -> a profile yaml path, or None for the papers' defaults ('none')."""
    return QUICKSTART_PROFILE if name == "quickstart" else (None if name in (None, "none") else name)


def _profile_sections(model, path):
    import yaml

    if not os.path.isfile(path):
        raise ValueError(f"Profile file not found: {path}. Use --profile=quickstart, --profile=none or a yaml path.")
    with open(path) as handle:
        profile = yaml.safe_load(handle) or {}
    per_model = profile.pop("per_model", {})
    return {**profile, **per_model.get(model, {})}


def load_profile(model, path=QUICKSTART_PROFILE):
    """The settings of a profile yaml for `model`: its shared keys, then the model's own `per_model` section
    (its `dataset`, the quick start's dataset, is not a setting: see `quickstart_dataset`)."""
    settings = _profile_sections(model, path)
    settings.pop("dataset", None)
    return settings


def quickstart_dataset(models, path=QUICKSTART_PROFILE):
    """The dataset a run without --dataset uses: the profile's `dataset` for these models (ml-100k, or one a model
    needs, e.g. MQL4GRec's published codes); models that need different ones must be given --dataset."""
    wanted = {model: _profile_sections(model, path).get("dataset", "ml-100k") for model in models}
    if len(set(wanted.values())) > 1:
        raise ValueError(f"No --dataset given and the quick-start datasets differ ("
                         f"{', '.join(f'{m}: {d}' for m, d in wanted.items())}): pass --dataset=NAME.")
    return next(iter(wanted.values()))


def main(argv=None):
    from recbole_genrec.quick_start import run_recbole_genrec
    from recbole_genrec.results import format_table, plot_results, result_row, write_csv

    options, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    models = [m.strip() for m in options.get("model", "TIGER").split(",") if m.strip()]
    config_files = [f for f in options.get("config_files", "").replace(",", " ").split() if f]
    profile = resolve_profile(options.get("profile", "none" if "dataset" in options else "quickstart"))
    dataset = options.get("dataset") or quickstart_dataset(models, profile or QUICKSTART_PROFILE)
    if "dataset" not in options:
        print(f"No --dataset given: quick start on {dataset} with the profile {profile or 'none'}. "
              f"Pass --dataset={dataset} for the papers' model defaults.")
    config_files = config_files or None

    from recbole_genrec import registry

    for model in models:  # fail before any training when one name is wrong
        registry.get_model(model)
    if "tune" in options:  # the profile is the search's base config too; sampled values override it
        base = {**load_profile(models[0], profile), **overrides} if profile and len(models) == 1 else overrides
        return tune_main(options, models, dataset, config_files, base)
    rows = []
    for model in models:
        config_dict = {**load_profile(model, profile), **overrides} if profile else dict(overrides)
        result = run_recbole_genrec(model=model, dataset=dataset, config_file_list=config_files,
                                    config_dict=config_dict)
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


def tune_main(options, models, dataset, config_files, overrides):
    """The tuning mode: one model, its hyper file, Ray Tune; returns the TuningResult."""
    from recbole_genrec.tuning import run_tuning

    if len(models) != 1:
        raise ValueError(f"--tune searches one model at a time, got --model={','.join(models)}.")

    def number(name, default, kind=float):
        return kind(parse_value(options[name])) if name in options else default

    return run_tuning(
        models[0], dataset, options["tune"], config_file_list=config_files, config_dict=dict(overrides),
        trials=number("trials", None, int), search=options.get("search", "random"),
        ray_address=options.get("ray_address"), ray_num_cpus=number("ray_num_cpus", None, int),
        cpus_per_trial=number("cpus_per_trial", 1), gpus_per_trial=number("gpus_per_trial", 0),
        max_concurrent=number("max_concurrent", None, int), tune_dir=options.get("tune_dir"),
        scheduler=options.get("scheduler", "asha"), grace_period=number("grace_period", 1, int),
    )


if __name__ == "__main__":
    main()
