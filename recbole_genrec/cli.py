"""Command line: `python run_recbole_genrec.py --model=TIGER,SASRec --dataset=ml-100k --epochs=1`.

Every `--key=value` becomes a config override (values parsed as Python literals when possible, as RecBole does).
A key that no config layer knows is refused with the closest known names (a misspelling would be ignored); a
deliberately new key passes with `--allow_unknown_keys=[key]`. Values are checked against the defaults' types.
Options of the CLI itself: --model (comma-separated for a side-by-side run; every model's configuration is
checked before the first trains), --dataset, --config_files (comma- or space-separated), --results_file (CSV,
rewritten as each model finishes; a PNG bar chart is written beside it at the end), --profile (a yaml of shared
keys plus `per_model:` sections applied under the overrides; `quickstart` = the CPU profile, the default when no
--dataset is given; `none` = the papers' defaults, the default otherwise), --threads=N (torch's CPU threads and
faiss's OpenMP threads in this process, set before any work; default: the libraries' own), --dry_run=True (every
model of the command up to and including its first training batch: config checks, dataset load, representation and
tokenization with the collapse check, split, model and trainer build, one forward and backward pass of one
training batch; then one "ready" line per model and exit 0, with no optimizer step, no checkpoint and no results
written; the caches it fills are the real run's; with --tune it checks the hyper file, the options and the base
configuration only).
`main` (run_recbole_genrec.py and the installed `recbole-genrec`) exits 0 after a finished run, 1 with a
one-line message for bad input, and 130 after Ctrl-C with one line saying what was kept (the finished models' rows in
--results_file, the last checkpoint written, a resume_file's training state); `run` returns the rows and raises.

Tuning mode (Ray Tune, see recbole_genrec/tuning.py and hyper/README.md):
`python run_recbole_genrec.py --model=TIGER --tune=hyper/TIGER.hyper --trials=20` with --trials (random search:
configurations, default 10; grid search: samples per grid point, default 1), --search=random|grid,
--ray_address (join a running cluster, e.g. auto or HOST:6379; default: a local Ray), --ray_num_cpus (local Ray),
--cpus_per_trial (default 1), --gpus_per_trial (default 0; fractions share a GPU), --max_concurrent,
--tune_dir (default ray_results/<model>-<dataset>-<time>), --scheduler=asha|fifo, --grace_period (evaluations a
trial runs before ASHA may stop it, default 1).

Recommendation mode (recbole_genrec/recommend.py): `python run_recbole_genrec.py --recommend=saved/TIGER-....pth
--users=1,2,3 --topk=10` prints each user's top-K items (item token, score, title) from the trained checkpoint,
with --histories="I1,I2;I3,I4" (raw item tokens of unseen users, oldest first), --output=recs.csv,
--exclude_seen=False (keep items the user already has; excluded by default), --device=cpu|cuda, --state (RecBole's
log level, WARNING unless given), --cache_dir (where the training run's caches are, when they moved)."""
import glob
import os
import sys
import time

from recbole_genrec.config import ALLOW_UNKNOWN_KEYS
from recbole_genrec.paths import QUICKSTART_PROFILE, resolve_properties_path
from recbole_genrec.safety import parse_value

CLI_OPTIONS = ("model", "dataset", "config_files", "results_file", "profile", "threads", "dry_run")
TUNE_OPTIONS = ("tune", "trials", "search", "ray_address", "ray_num_cpus", "cpus_per_trial", "gpus_per_trial",
                "max_concurrent", "tune_dir", "scheduler", "grace_period")
RECOMMEND_OPTIONS = ("recommend", "users", "histories", "output", "exclude_seen")
CLI_OPTIONS += TUNE_OPTIONS + RECOMMEND_OPTIONS


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


def _load_yaml(path):
    """A yaml file read as RecBole reads its config files (`1e-3` is a float; errors name the file and line)."""
    from recbole_genrec.safety import load_config_yaml

    return load_config_yaml(path)


def _profile_sections(model, path):
    if not os.path.isfile(path):
        raise ValueError(f"Profile file not found: {path}. Use --profile=quickstart, --profile=none or a yaml path.")
    profile = _load_yaml(path) or {}
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


class Kept:
    """What a command has left behind so far (the result rows it wrote; the checkpoint folders and resume files of
    its models), for the line `main` prints when it is interrupted."""

    def __init__(self):
        self.started = time.time()
        self.results_file, self.rows_written, self.checkpoint_dirs, self.resume_files = None, 0, [], []

    def _newest(self, paths):
        """The newest of `paths` written since the command started, or None."""
        written = [path for path in paths if os.path.isfile(path) and os.path.getmtime(path) >= self.started]
        return max(written, key=os.path.getmtime, default=None)

    def __str__(self):
        kept = []
        if self.rows_written:
            kept.append(f"{self.rows_written} finished result row{'s' if self.rows_written > 1 else ''} in "
                        f"{self.results_file}")
        checkpoint = self._newest([path for folder in self.checkpoint_dirs
                                   for path in glob.glob(os.path.join(folder, "*.pth"))])
        if checkpoint:
            kept.append(f"the last checkpoint written, {checkpoint}")
        resume_file = self._newest(self.resume_files)
        if resume_file:
            kept.append(f"the training state in {resume_file} (a run given it continues from its last epoch)")
        return f"kept {'; '.join(kept)}" if kept else "no result row or checkpoint was written"


def run(argv=None, kept=None):
    """The command line's work: parse, check every model's configuration, train and evaluate (or tune). Returns
    the result rows (or the TuningResult); raises on bad input. `main` is the entry point that exits. `kept`: a
    Kept, told what the run writes."""
    kept = kept or Kept()
    options, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    set_threads(options.get("threads"))
    if "recommend" in options:
        return recommend_main(options, overrides)
    stray = [f"--{name}" for name in RECOMMEND_OPTIONS if name in options]
    if stray:
        raise ValueError(f"{', '.join(stray)} belong{'s' if len(stray) == 1 else ''} to the recommendation mode: add "
                         f"--recommend=CHECKPOINT (a saved/<Model>-<time>-<random>.pth of a training run).")
    models = [m.strip() for m in options.get("model", "TIGER").split(",") if m.strip()]
    config_files = [resolve_properties_path(f) for f in options.get("config_files", "").replace(",", " ").split() if f]
    profile = resolve_profile(options.get("profile", "none" if "dataset" in options else "quickstart"))
    allowed = check_overrides(overrides, models, config_files, profile)
    dataset = options.get("dataset") or quickstart_dataset(models, profile or QUICKSTART_PROFILE)
    if "dataset" not in options:
        print(f"No --dataset given: quick start on {dataset} with the profile {profile or 'none'}. "
              f"Pass --dataset={dataset} for the papers' model defaults.")
    config_files = config_files or None

    from recbole_genrec import registry

    for model in models:  # fail before any training when one name is wrong
        registry.get_model(model)
    dry_run = parse_flag(options, "dry_run")
    if "tune" in options:  # the profile is the search's base config too; sampled values override it
        base = {**load_profile(models[0], profile), **overrides} if profile and len(models) == 1 else overrides
        return tune_main(options, models, dataset, config_files, base, allowed, dry_run=dry_run)

    from recbole_genrec.config import GenRecConfig
    from recbole_genrec.distributed import is_main_process
    from recbole_genrec.quick_start import run_recbole_genrec
    from recbole_genrec.results import format_table, plot_results, result_row, write_csv

    config_dicts = {model: ({**load_profile(model, profile), **overrides} if profile else dict(overrides))
                    for model in models}
    for model in models:  # every model's configuration is checked before the first one trains
        config = GenRecConfig(model=model, dataset=dataset, config_file_list=config_files,
                              config_dict=dict(config_dicts[model]))
        kept.checkpoint_dirs.append(config["checkpoint_dir"])
        kept.resume_files += [os.path.abspath(config["resume_file"])] if config["resume_file"] else []
    if dry_run:
        return dry_run_models(models, dataset, config_files, config_dicts)
    results_file = options.get("results_file")
    rows = []
    for model in models:
        result = run_recbole_genrec(model=model, dataset=dataset, config_file_list=config_files,
                                    config_dict=dict(config_dicts[model]))
        if result["paused"]:  # train_time_budget with a resume_file: no test yet, the same command goes on
            print(f"{model}: paused after {result['epochs']} epochs (train_time_budget); the same command trains on "
                  f"from its resume_file.")
            continue
        rows.append(result_row(result))
        if results_file and is_main_process():  # each finished row at once (under torchrun: rank 0 writes)
            write_csv(rows, results_file)
            kept.results_file, kept.rows_written = results_file, len(rows)
    if not is_main_process() or not rows:
        return rows
    table = format_table(rows)
    print(f"\nTest results on {dataset} (leave-one-out, full ranking; scored by RecBole's metrics)\n{table}\n")
    if results_file:
        png = results_file.rsplit(".", 1)[0] + ".png"
        plot_results(rows, png)
        print(f"Results written to {results_file} and {png}")
    return rows


def recommend_main(options, overrides):
    """--recommend=CHECKPOINT: the top-K items (--topk, default 10) for --users=U1,U2 (tokens of the dataset's users)
    and/or --histories="I1,I2;I3" (raw item tokens, oldest first, `;` between users), printed as a table and written
    to --output=FILE.csv when given; --exclude_seen=False keeps items the user already has; --device (default cpu)."""
    from recbole_genrec.recommend import format_recommendations, recommend, write_recommendations

    if not os.path.isfile(options["recommend"]):
        raise FileNotFoundError(f"--recommend: checkpoint {options['recommend']} not found (training runs save them "
                                f"under saved/, e.g. saved/TIGER-Dec-02-2026_04-00-00-3f2a9c1b.pth).")
    extra = sorted(set(overrides) - {"topk", "device", "state", "cache_dir"})
    if extra:
        raise ValueError(f"--recommend reads a trained checkpoint; {', '.join('--' + key for key in extra)} would not "
                         f"change it. Options: --users, --histories, --topk, --output, --exclude_seen, --device, "
                         f"--state (RecBole's log level, default WARNING here), --cache_dir (where the training run's "
                         f"caches are now).")
    topk = overrides.get("topk", 10)
    topk = max(topk) if isinstance(topk, (list, tuple)) else topk
    if isinstance(topk, bool) or not isinstance(topk, int):
        raise ValueError(f"--topk takes an integer, got {topk!r}.")
    users = [u.strip() for u in options["users"].split(",") if u.strip()] if "users" in options else None
    histories = ([[i.strip() for i in history.split(",") if i.strip()] for history in options["histories"].split(";")]
                 if "histories" in options else None)
    exclude_seen = parse_flag(options, "exclude_seen") if "exclude_seen" in options else True
    recommendations = recommend(options["recommend"], users=users, histories=histories, k=topk,
                                exclude_seen=exclude_seen, device=str(overrides.get("device", "cpu")),
                                config_dict=recommend_settings(overrides))
    print(format_recommendations(recommendations))
    if "output" in options:
        write_recommendations(recommendations, options["output"])
        print(f"Recommendations written to {options['output']}")
    return recommendations


def recommend_settings(overrides):
    """The recommendation mode's config_dict: RecBole's log at WARNING (the table is the output) unless --state is
    given, and --cache_dir made absolute as a training run's config holds it."""
    settings = {"state": overrides.get("state", "WARNING")}
    if "cache_dir" in overrides:
        settings["cache_dir"] = os.path.abspath(str(overrides["cache_dir"]))
    return settings


def parse_flag(options, name):
    """A boolean command-line option (`--dry_run=True`), False when absent."""
    if name not in options:
        return False
    value = parse_value(options[name])
    if not isinstance(value, bool):
        raise ValueError(f"--{name} takes True or False, got {options[name]!r}.")
    return value


def dry_run_models(models, dataset, config_files, config_dicts):
    """--dry_run=True: every model up to and including its first training batch (quick_start.dry_run_recbole_genrec),
    one "ready" line each; no training step, nothing saved. Returns the dry runs' reports."""
    from recbole_genrec.quick_start import dry_run_recbole_genrec

    reports = []
    for model in models:
        report = dry_run_recbole_genrec(model=model, dataset=dataset, config_file_list=config_files,
                                        config_dict=dict(config_dicts[model]))
        reports.append(report)
        levels = report["semantic_id_levels"]
        ids = f"semantic IDs {'x'.join(str(size) for size in levels)}, " if levels else ""
        print(f"{model} on {dataset}: ready (dry run: {report['items']:,} items, {ids}{report['parameters']:,} "
              f"parameters, first training batch of {report['batch_rows']} loss {report['loss']:.4f}; no step "
              f"taken, nothing saved)", flush=True)
    return reports


# Bad input, raised by the checks (unknown model, dataset, setting or file, wrong type, inconsistent settings): a
# message that says what to change, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, KeyError)


# Libraries whose deprecation notices a run triggers on every call (RecBole on today's pandas and torch: chained
# `fillna(inplace=True)`, `torch.cuda.amp.GradScaler`; ray 2.6.3's pkg_resources): nothing a user can act on.
LIBRARY_MODULES = r"(recbole|pandas|torch|ray|sklearn|transformers|sentence_transformers)(\.|$)"


def quiet_library_deprecations():
    """Keep the libraries' deprecation notices off the console of the command line (the package, imported from
    Python, leaves the warning filters to its caller)."""
    import warnings

    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARY_MODULES)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)


def main(argv=None):
    """Entry point of `run_recbole_genrec.py` and of the installed `recbole-genrec` command: 0 when the run
    finished, 1 with a one-line message on stderr for bad input or a search in which every trial failed, 130 (the
    shells' code for SIGINT) after Ctrl-C with one line on stderr saying what was kept; --help (or -h) prints this
    module's description of every option and exits 0."""
    args = sys.argv[1:] if argv is None else list(argv)
    if "--help" in args or "-h" in args:
        print(__doc__)
        return 0
    argv = args
    quiet_library_deprecations()
    kept = Kept()
    try:
        result = run(argv, kept)
    except KeyboardInterrupt:
        print(f"recbole_genrec: interrupted: {kept}.", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"recbole_genrec: error: {message}", file=sys.stderr)
        return 1
    if getattr(result, "best", True) is None:  # a TuningResult without any finished trial
        print(f"recbole_genrec: error: every trial of the search failed (errors in {result.results_csv}).",
              file=sys.stderr)
        return 1
    return 0


def set_threads(value):
    """--threads=N: torch's CPU threads (intra-op) and faiss's OpenMP threads, set before any work."""
    if value is None:
        return
    threads = parse_value(value) if isinstance(value, str) else value  # the command line's text, or a number
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"--threads takes a positive integer, got {value!r}.")
    import torch  # torch first, faiss second, as the package imports them
    import faiss

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def _allow_unknown_values(overrides, config_files, profile, models):
    """Every `allow_unknown_keys` the run's layers set (command line, config files, profile)."""
    from recbole_genrec.config import allowed_unknown_keys

    values = [overrides.get(ALLOW_UNKNOWN_KEYS)]
    for path in config_files:
        loaded = _load_yaml(path) if os.path.isfile(path) else None
        if isinstance(loaded, dict):
            values.append(loaded.get(ALLOW_UNKNOWN_KEYS))
    if profile:
        values += [load_profile(model, profile).get(ALLOW_UNKNOWN_KEYS) for model in models]
    allowed = [allowed_unknown_keys(value) for value in values]
    return True if any(a is True for a in allowed) else sorted(set().union(*allowed))


def check_overrides(overrides, models, config_files, profile):
    """Misspelt `--key=value`s, refused before anything is read, with the closest config keys or command-line
    options (`--result_file` -> `--results_file`). The configurations (`GenRecConfig`) check types and files."""
    from recbole_genrec.config import check_known_keys

    allowed = _allow_unknown_values(overrides, config_files, profile, models)
    check_known_keys(overrides, allowed=allowed, extra_known=CLI_OPTIONS, flag="--")
    return allowed


def tune_main(options, models, dataset, config_files, overrides, allowed=None, dry_run=False):
    """The tuning mode: one model, its hyper file, Ray Tune; returns the TuningResult. `dry_run`: the hyper file,
    the options and the base configuration are checked (tuning.check_search), no Ray, no trial; returns a report."""
    from recbole_genrec.config import check_known_keys
    from recbole_genrec.hyper import parse_hyper_file
    from recbole_genrec.tuning import check_search, run_tuning

    if len(models) != 1:
        raise ValueError(f"--tune searches one model at a time, got --model={','.join(models)}.")
    if os.path.isfile(options["tune"]):  # a misspelt searched key would fail every trial (or be ignored)
        try:
            check_known_keys([name.split(".")[0] for name in parse_hyper_file(options["tune"])], allowed=allowed)
        except ValueError as error:
            raise ValueError(f"{options['tune']}: {error}") from None

    def number(name, default, kind=float):
        if name not in options:
            return default
        value = parse_value(options[name])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise ValueError(f"--{name} takes {'an integer' if kind is int else 'a number'}, got {options[name]!r}.")
        return kind(value)

    numbers = dict(trials=number("trials", None, int), ray_num_cpus=number("ray_num_cpus", None, int),
                   cpus_per_trial=number("cpus_per_trial", 1), gpus_per_trial=number("gpus_per_trial", 0),
                   max_concurrent=number("max_concurrent", None, int), grace_period=number("grace_period", 1, int))
    search, scheduler = options.get("search", "random"), options.get("scheduler", "asha")
    if dry_run:
        space = check_search(models[0], dataset, options["tune"], config_file_list=config_files,
                             config_dict=dict(overrides), search=search, scheduler=scheduler,
                             ray_address=options.get("ray_address"))[0]
        print(f"{models[0]} on {dataset}: ready to tune (dry run: {options['tune']} searches {len(space)} "
              f"parameter{'s' if len(space) != 1 else ''} ({', '.join(space)}), base configuration and options "
              f"checked; no Ray, no trial run)", flush=True)
        return [{"model": models[0], "dataset": dataset, "hyper_file": options["tune"], "parameters": list(space)}]
    return run_tuning(
        models[0], dataset, options["tune"], config_file_list=config_files, config_dict=dict(overrides),
        search=search, ray_address=options.get("ray_address"), tune_dir=options.get("tune_dir"),
        scheduler=scheduler, **numbers,
    )


if __name__ == "__main__":
    sys.exit(main())
