"""Config: RecBole's configuration with this plugin's property files overlaid, plus validation."""
import difflib
import functools
import glob
import numbers
import os
import re

import recbole
import yaml
from recbole.config import Config
from recbole.utils import ModelType

from recbole_genrec import registry, safety
from recbole_genrec.trainer import SUBSET_PREFIXES
from recbole_genrec.paths import PACKAGE_DIR, PROPERTIES_DIR  # noqa: F401  (the top-level properties/, see paths.py)
from recbole_genrec.tokenization.published import PUBLISHED, check_published_source

# The checkout's top-level dataset/ folder (present for source and editable installs, and for the CLI).
REPO_DATASET_DIR = os.path.join(os.path.dirname(PACKAGE_DIR), "dataset")
RECBOLE_EXAMPLE_DIR = os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
# Settings that take one of a few values: checked (and lower-cased) here, before any data is read or a tokenizer
# fitted, so a typo cannot surface after an hour of tokenizer fitting or silently select a default.
CHOICES = {
    "tokenizer_fit_on": ("all", "train"),
    "lr_scheduler": ("none", "constant", "cosine", "inverse_sqrt", "linear"),
    "mixed_precision": ("none", "bf16"),
    "liger_inference": ("hybrid", "dense", "generative"),
    "liger_valid_inference": ("hybrid", "dense", "generative"),
    "rpg_inference": ("exact", "graph"),
    "sid_collapse": ("error", "warn"),
    "sid_softmax": ("vocabulary", "level"),
    "warmup_shape": ("linear", "constant"),
    "cf_untrained_items": ("zero", "model"),
}
RECBOLE_PROPERTIES_DIR = os.path.join(os.path.dirname(recbole.__file__), "properties")
# A deliberately new key (read by your own model or code) passes the unknown-key check when named here
# (`allow_unknown_keys: [my_key]`, or `True` for every key).
ALLOW_UNKNOWN_KEYS = "allow_unknown_keys"
# Keys read or set in code that no default yaml file names: RecBole's Config (model, dataset, derived values,
# distributed runs, deprecated names it still warns about), RecBole's own code (transforms, a few models and
# metrics), and this plugin's trainer. Everything else comes from the yaml files (see `known_config_keys`).
CODE_KEYS = (
    "model", "dataset", "config_file", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device", "single_spec",
    "valid_neg_sample_args", "test_neg_sample_args", "local_rank", "nproc", "world_size", "offset", "ip", "port",
    "verbose", "neg_sampling", "training_neg_sample_num",
    "CROP_ITEM_SEQ", "CROP_ITEM_SEQ_LEN", "INVERSE_ITEM_SEQ", "MASK_INDEX", "MASK_ITEM_SEQ", "NEG_ITEMS",
    "POS_ITEMS", "REORDER_ITEM_SEQ", "eta", "encoding", "tail_ratio", "token_num_threshold",
    "xgb_early_stopping_rounds", "cin", "contrast", "feature_num", "has_residual", "norm", "sim", "use_filter",
    "device_batches", "mixed_precision", "train_time_budget", ALLOW_UNKNOWN_KEYS,
    "train_batch_samples",  # MQL4GRec: train_batch_size in samples, kept when it converts it to training targets
)
# RecBole keys whose values may take several forms (its Config normalises them).
MULTI_TYPE_KEYS = {
    "topk": ("int", "list"), "metrics": ("str", "list"), "gpu_id": ("str", "int", "list"),
    "additional_feat_suffix": ("str", "list"), ALLOW_UNKNOWN_KEYS: ("bool", "list", "str"),
    "text_fields": ("list", "str"),  # `--text_fields=title,categories` on the command line
}
# An own dataset without a yaml: the `.item` fields embedded as item text when `text_fields` is not set. The usual
# names present, in the file's order; when none is, every token / token_seq field except ids (`*_id`).
USUAL_TEXT_FIELDS = ("title", "movie_title", "name", "brand", "categories", "category", "genre", "genres", "class",
                     "description")
TYPE_NAMES = {"bool": "a bool", "int": "an int", "float": "a number", "str": "a string", "list": "a list",
              "dict": "a dict"}
# Metrics whose results are keyed by `name@k` (so `valid_metric` names a K of `topk`); the rest (AUC, ...) not.
TOPK_KEYED_NEEDS = ("rec.topk", "rec.items")


def _yaml_loader():
    # RecBole's yaml loader (it also reads 1e-3 as a float, as RecBole reads its own files)
    return Config._build_yaml_loader(None)


def _kind(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "float"
    for kind, types in (("str", str), ("list", (list, tuple)), ("dict", dict)):
        if isinstance(value, types):
            return kind
    return None


def default_property_files():
    """The plugin's default yaml files: `overall.yaml`, the quick-start profile, `model/*.yaml` and
    `dataset/*.yaml` of the properties folder. Other yaml files there (such as `beauty.yaml`, a `--config_files`
    recipe, or a user's own) are not defaults: their keys must be known like any config file's."""
    return ([os.path.join(PROPERTIES_DIR, name) for name in ("overall.yaml", "quickstart.yaml")]
            + sorted(glob.glob(os.path.join(PROPERTIES_DIR, "model", "*.yaml")))
            + sorted(glob.glob(os.path.join(PROPERTIES_DIR, "dataset", "*.yaml"))))


@functools.lru_cache(maxsize=None)
def default_layers():
    """{key: {kind: an example default}} over every default yaml file: RecBole's overall, model, dataset and
    quick-start files, this plugin's overall, model and dataset files and its quick-start profile (shared keys and
    every `per_model` section). Defaults of every model count, so overrides shared by a multi-model run pass."""
    paths = [path for path in glob.glob(os.path.join(RECBOLE_PROPERTIES_DIR, "**", "*.yaml"), recursive=True)
             if os.path.basename(path) not in ("url.yaml", "kg_url.yaml")]  # dataset name -> download URL
    paths += default_property_files()
    loader, layers = _yaml_loader(), {}
    for path in sorted(paths):
        with open(path, encoding="utf-8") as handle:
            values = yaml.load(handle.read(), Loader=loader) or {}
        sections = [values] + list((values.pop("per_model", None) or {}).values())
        for section in sections:
            for key, value in (section or {}).items():
                kinds = layers.setdefault(key, {})
                if value is not None and _kind(value):
                    kinds.setdefault(_kind(value), value)
    return layers


@functools.lru_cache(maxsize=None)
def known_config_keys():
    """Every key some config layer knows: the default yaml files (`default_layers`), RecBole's argument lists,
    the keys RecBole and this plugin read or set in code (`CODE_KEYS`) and the plugin's choice settings."""
    from recbole.utils import dataset_arguments, evaluation_arguments, general_arguments, training_arguments

    return frozenset(default_layers()) | set(general_arguments + training_arguments + evaluation_arguments
                                             + dataset_arguments) | set(CODE_KEYS) | set(CHOICES)


def allowed_unknown_keys(value):
    """`allow_unknown_keys`'s value -> True (every key) or a set of names; accepts a list or a string
    (`my_key`, `a,b`, `[a, b]`: the command line passes names it cannot parse as Python literals as a string)."""
    if value is None or value is False:
        return set()
    if value is True:
        return True
    if isinstance(value, str):
        if value.strip().lower() == "true":
            return True
        return set(re.findall(r"[^\s,\[\]'\"]+", value))
    if isinstance(value, (list, tuple, set)):
        return {str(name) for name in value}
    raise ValueError(f"{ALLOW_UNKNOWN_KEYS} takes True or a list of key names, got {value!r}.")


def check_known_keys(keys, allowed=None, extra_known=(), flag=None):
    """Refuse keys no config layer knows (a misspelt key would be silently ignored), with the closest known names.
    `allowed`: `allow_unknown_keys`'s value. `extra_known`: more names (the command line's own options).
    `flag`: the name's prefix in the message ('--' on the command line)."""
    allow = allowed_unknown_keys(allowed)
    if allow is True:
        return
    known = known_config_keys() | set(extra_known)
    unknown = [key for key in keys if key not in known and key not in allow]
    if not unknown:
        return
    prefix = flag or ""
    parts = []
    for key in unknown:
        close = registry.closest_names(key, known)
        hint = f"did you mean {' or '.join(prefix + name for name in close)}?" if close else "no similar key"
        parts.append(f"{prefix}{key} ({hint})")
    names = ", ".join(unknown)
    how = (f"--{ALLOW_UNKNOWN_KEYS}=[{names}]" if flag == "--" else f"{ALLOW_UNKNOWN_KEYS}: [{names}]")
    raise ValueError(
        f"Unknown setting{'s' if len(unknown) > 1 else ''} {'; '.join(parts)}: no default of RecBole or recbole_genrec "
        f"(overall, model, dataset or profile yaml) knows {'them' if len(unknown) > 1 else 'it'}, so it would be "
        f"ignored. A deliberately new key (read by your own code) passes with {how}."
    )


def check_value_types(values, defaults=None):
    """Refuse values of another type than the key's defaults in the yaml files (int passes for a float, None for
    anything); keys without a non-None default are not checked. `defaults`: this run's defaults, quoted in the
    message. All wrong keys in one message."""
    layers, wrong, defaults = default_layers(), [], defaults or {}
    for key, value in values.items():
        if value is None:
            continue
        if key in MULTI_TYPE_KEYS:
            kinds, example = MULTI_TYPE_KEYS[key], None
        else:
            layer_defaults = layers.get(key) or {}
            kinds, example = tuple(layer_defaults), next(iter(layer_defaults.values()), None)
        if not kinds:
            continue
        kind = _kind(value)
        if kind == "int" and "float" in kinds:
            kind = "float"
        if kind not in kinds:
            expected = " or ".join(TYPE_NAMES[k] for k in kinds)
            example = defaults.get(key) if defaults.get(key) is not None else example
            default = f" (default {example!r})" if example is not None else ""
            wrong.append(f"{key} must be {expected}{default}, got {value!r} ({type(value).__name__})")
    if wrong:
        raise ValueError(f"Wrong type: {'; '.join(wrong)}.")


def atomic_header(path):
    """{field name: type} of an atomic file's header ({} when the file does not exist)."""
    if not os.path.isfile(path):
        return {}
    from recbole_genrec.data.atomic import decoding_errors  # the data package imports RecBole's data modules

    with open(path, encoding="utf-8") as handle, decoding_errors(path):
        header = handle.readline().rstrip("\r\n")
    return dict(column.split(":", 1) if ":" in column else (column, "") for column in header.split("\t"))


def default_text_fields(item_file, item_id_field="item_id"):
    """The `.item` fields embedded as item text when `text_fields` is not set: the USUAL_TEXT_FIELDS it has, in
    the file's order, else every token / token_seq field except ids (the item id, `*_id`)."""
    header = atomic_header(item_file)
    usual = [name for name in header if name.lower() in USUAL_TEXT_FIELDS]
    if usual:
        return usual
    return [name for name, kind in header.items() if kind in ("token", "token_seq") and name != item_id_field
            and not name.lower().endswith("_id")]


def plugin_property_files(model, dataset):
    """The plugin's yaml files for a run, low to high precedence (those that exist)."""
    paths = (os.path.join(PROPERTIES_DIR, "overall.yaml"), os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml"),
             os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml"))
    return [path for path in paths if os.path.isfile(path)]


class GenRecConfig(Config):
    """RecBole's Config with the plugin's defaults.

    Precedence, low to high: RecBole's overall, model and dataset yaml and its sequential quick-start yaml ->
    the plugin's `properties/overall.yaml` -> `properties/dataset/<dataset>.yaml` -> `properties/model/<model>.yaml`
    -> config files -> config_dict. Unlike RecBole, the command line is not read here: `run_recbole_genrec.py`
    parses it and passes a config_dict, so importing the library never depends on `sys.argv`.

    Before anything else (and before any data is read), the keys set by config files and config_dict must be known
    (`known_config_keys`; others pass when listed in `allow_unknown_keys`), their values of their defaults' types
    (`check_value_types`), the metrics RecBole's and `valid_metric` one the evaluation computes.
    """

    def _load_cmd_line(self):
        return dict()

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("No model given: pass `model=...` or `--model=NAME`.")
        if isinstance(model, str):
            model_class = registry.get_model(model)
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise KeyError("No dataset given: pass `dataset=...` or `--dataset=NAME`.")
        return model, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for path in plugin_property_files(model, dataset):
            loaded = self._update_internal_config_dict(path)
            if "dataset" in os.path.dirname(path) and loaded:
                self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]
        # Cross-entropy sequential models train without negative sampling (RecBole refuses the combination).
        if model_class.type == ModelType.SEQUENTIAL and self.internal_config_dict.get("loss_type", "CE") == "CE":
            self.internal_config_dict["train_neg_sample_args"] = None

    def _set_default_parameters(self):
        # Names and types of what the caller set, before anything else reads them (or any data is read).
        external = self.external_config_dict
        check_known_keys(external, allowed=external.get(ALLOW_UNKNOWN_KEYS))
        check_value_types(external, defaults=self.internal_config_dict)
        self._check_metric_names()
        self._resolve_data_path()
        super()._set_default_parameters()
        self._own_dataset_defaults()
        # RecBole forces ml-100k onto its bundled copy; honour an explicit data_path for it too.
        explicit = self.external_config_dict.get("data_path")
        if self.dataset == "ml-100k" and explicit:
            self.final_config_dict["data_path"] = os.path.join(os.path.abspath(explicit), self.dataset)
        # Ray Tune changes the working directory per trial: every path becomes absolute here.
        for key in ("checkpoint_dir", "cache_dir", "data_path"):
            if self.final_config_dict.get(key):
                self.final_config_dict[key] = os.path.abspath(self.final_config_dict[key])
        self._validate()

    def _init_device(self):
        # One process of a DDP group (--nproc, torchrun, Ray Train): recbole_genrec/distributed.py
        from recbole_genrec import distributed

        if not distributed.init_device(self.final_config_dict):
            super()._init_device()

    def _resolve_data_path(self):
        """Find `<data_path>/<dataset>/<dataset>.inter`; fail early with the places searched (RecBole itself would
        try to download an unknown dataset and wait for an answer on stdin)."""
        name = self.dataset
        explicit = self.external_config_dict.get("data_path")
        # run from the checkout, ./dataset is REPO_DATASET_DIR: searched and listed once
        candidates = [explicit] if explicit else list(dict.fromkeys(
            os.path.abspath(root) for root in ("dataset", REPO_DATASET_DIR, RECBOLE_EXAMPLE_DIR)))
        for root in candidates:
            if os.path.isfile(os.path.join(root, name, f"{name}.inter")):
                self.final_config_dict["data_path"] = os.path.abspath(root)
                return
        available = sorted(
            {d for root in candidates if os.path.isdir(root) for d in os.listdir(root)
             if os.path.isfile(os.path.join(root, d, f"{d}.inter"))}
        )
        raise ValueError(
            f"Dataset '{name}' not found: no {name}/{name}.inter under {', '.join(candidates)}. "
            f"Available datasets: {', '.join(available) or 'none'}. "
            f"Put the atomic files in <data_path>/{name}/ and pass --data_path=<data_path>."
        )

    def _own_dataset_defaults(self):
        """What a dataset without a yaml needs and its files say: the time field in `load_col` when the `.inter`
        file has one (leave-one-out by time sorts on it), and `text_fields` from the `.item` file's text fields
        (`default_text_fields`). A value the user set is kept (`--text_fields=a,b` is split at the commas). What
        was chosen is in `dataset_defaults`, logged when the dataset is created (data.create_dataset)."""
        cfg, self.dataset_defaults = self.final_config_dict, []
        inter_file = os.path.join(cfg["data_path"], f"{self.dataset}.inter")
        inter_columns = (cfg.get("load_col") or {}).get("inter")
        time_field = cfg["TIME_FIELD"]
        if (inter_columns and time_field not in inter_columns and "load_col" not in self.external_config_dict
                and time_field in atomic_header(inter_file)):
            cfg["load_col"] = {**cfg["load_col"], "inter": list(inter_columns) + [time_field]}
            self.dataset_defaults.append(f"load_col.inter: {cfg['load_col']['inter']} (the time field "
                                         f"'{time_field}' of {os.path.basename(inter_file)} added)")
        if isinstance(cfg.get("text_fields"), str):
            cfg["text_fields"] = [name.strip() for name in cfg["text_fields"].split(",") if name.strip()]
        item_file = os.path.join(cfg["data_path"], f"{self.dataset}.item")
        if cfg.get("text_fields") is None and os.path.isfile(item_file):
            cfg["text_fields"] = default_text_fields(item_file, cfg["ITEM_ID_FIELD"])
            self.dataset_defaults.append(f"text_fields: {cfg['text_fields']} (the text fields of "
                                         f"{os.path.basename(item_file)}; set --text_fields=a,b to choose)")

    def _validate(self):
        cfg = self.final_config_dict
        safety.refuse_recbole_pickle_paths(self, "The run's config")  # before any work, not at the dataset load
        # Leave-one-out by time (order: TO) sorts on the time field; RecBole's default load_col leaves it out, and
        # the split then fails deep inside RecBole with "[timestamp] is not exist in interaction".
        inter_columns = (cfg.get("load_col") or {}).get("inter")
        if cfg["eval_args"].get("order") == "TO" and inter_columns and cfg["TIME_FIELD"] not in inter_columns:
            raise ValueError(
                f"Inconsistent config for dataset '{self.dataset}': eval_args.order is TO (leave-one-out by time) but "
                f"load_col.inter {list(inter_columns)} does not load the time field '{cfg['TIME_FIELD']}'. Add it, "
                f"e.g. load_col: {{inter: [user_id, item_id, {cfg['TIME_FIELD']}]}} in a --config_files yaml."
            )
        self._validate_valid_metric()
        for key, allowed in CHOICES.items():
            value = cfg.get(key)
            if value is None:
                continue
            if str(value).lower() not in allowed:
                raise ValueError(f"Unknown {key} {value!r}: choose one of {', '.join(allowed)}.")
            cfg[key] = str(value).lower()
        if registry.is_genrec_model(self.model):
            required = self.model_class.required_tokenizer
            if required and cfg["tokenizer"] != required[0]:
                raise ValueError(f"{required[1]}: `tokenizer` must be {required[0]} for {self.model}, got "
                                 f"{cfg['tokenizer']!r}.")
            if cfg.get("tokenizer") == PUBLISHED:
                hook = self.model_class.build_semantic_ids.__func__.__qualname__
                if hook != "GenerativeRecommender.build_semantic_ids":  # a method that builds its own IDs
                    raise ValueError(f"tokenizer {PUBLISHED} gives read codes to models whose IDs come from the "
                                     f"default tokenizer hook (TIGER, LIGER, RPG); {self.model} builds its own IDs "
                                     f"(its yaml's `tokenizer`).")
                check_published_source(self)
            beam_key = self.model_class.beam_width_key(cfg)
            beam, max_k = cfg.get(beam_key) if beam_key else None, max(cfg["topk"])
            if beam is not None and beam < max_k:
                raise ValueError(
                    f"Inconsistent config: {beam_key} ({beam}) must be >= the largest topk ({max_k}); "
                    f"raise `{beam_key}` or lower `topk`."
                )
            self.model_class.check_config(self)  # the method's own settings (MQL4GRec: its codes and domains)
            mode = cfg["eval_args"].get("mode", "full")
            if any(m != "full" for m in (mode.values() if isinstance(mode, dict) else [mode])):
                raise ValueError(
                    f"Generative models rank the whole catalogue: eval_args.mode must be 'full', got {mode!r}."
                )

    def _check_metric_names(self):
        """Unknown metric names, with the closest ones (RecBole raises NotImplementedError for them)."""
        from recbole.evaluator.register import metrics_dict

        metrics = self.final_config_dict["metrics"]
        for metric in [metrics] if isinstance(metrics, str) else metrics:
            if str(metric).lower() not in metrics_dict:
                close = difflib.get_close_matches(str(metric).lower(), list(metrics_dict), n=3, cutoff=0.5)
                raise ValueError(f"Unknown metric {metric!r} in metrics"
                                 f"{' (did you mean ' + ' or '.join(close) + '?)' if close else ''}: RecBole's "
                                 f"metrics are {', '.join(sorted(metrics_dict))}.")

    def _validate_valid_metric(self):
        """`valid_metric` must be a result the evaluation computes: a metric of `metrics`, at a K of `topk` for the
        metrics keyed by K (RecBole would only fail when it looks the score up after the first epoch)."""
        from recbole.evaluator.register import metrics_dict

        cfg = self.final_config_dict
        metrics = [m.lower() for m in cfg["metrics"]]
        topk = cfg["topk"] or []
        computed = []
        for metric in metrics:
            keyed = any(need in metrics_dict[metric].metric_need for need in TOPK_KEYED_NEEDS)
            computed += [f"{metric}@{k}" for k in topk] if keyed else [metric]
        valid = str(cfg["valid_metric"]).lower()
        subset = next((prefix for prefix in SUBSET_PREFIXES if valid.startswith(prefix)), None)
        if subset:  # a cold-start subset's score (trainer.ColdStartTally): the same metric on some users only
            if not cfg["cold_start_eval"]:
                raise ValueError(f"valid_metric {cfg['valid_metric']!r} scores the {subset[:-1]} users apart, which "
                                 f"needs cold_start_eval: True.")
            valid = valid[len(subset):]
        if valid not in computed:
            name = valid.split("@")[0]
            why = (f"{name} is not in metrics {cfg['metrics']}" if name not in metrics
                   else f"topk {topk} has no K={valid.split('@')[1]}" if "@" in valid
                   else f"{name} is scored at a K (e.g. {name}@{max(topk, default=10)})")
            raise ValueError(f"valid_metric {cfg['valid_metric']!r} is not computed: {why}. Choose one of "
                             f"{', '.join(computed)}, or change metrics/topk.")
