"""Config: RecBole's configuration with this plugin's property files overlaid, plus validation."""
import os

import recbole
from recbole.config import Config
from recbole.utils import ModelType

from recbole_genrec import registry

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
PROPERTIES_DIR = os.path.join(PACKAGE_DIR, "properties")
# The checkout's top-level dataset/ folder (present for source and editable installs, and for the CLI).
REPO_DATASET_DIR = os.path.join(os.path.dirname(PACKAGE_DIR), "dataset")
RECBOLE_EXAMPLE_DIR = os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
# Settings that take one of a few values: checked (and lower-cased) here, before any data is read or a tokenizer
# fitted, so a typo cannot surface after an hour of tokenizer fitting or silently select a default.
CHOICES = {
    "tokenizer_fit_on": ("all", "train"),
    "lr_scheduler": ("none", "cosine", "inverse_sqrt", "linear"),
    "mixed_precision": ("none", "bf16"),
    "liger_inference": ("hybrid", "dense", "generative"),
    "rpg_inference": ("exact", "graph"),
    "sid_collapse": ("error", "warn"),
}


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
        self._resolve_data_path()
        super()._set_default_parameters()
        # RecBole forces ml-100k onto its bundled copy; honour an explicit data_path for it too.
        explicit = self.external_config_dict.get("data_path")
        if self.dataset == "ml-100k" and explicit:
            self.final_config_dict["data_path"] = os.path.join(os.path.abspath(explicit), self.dataset)
        # Ray Tune changes the working directory per trial: every path becomes absolute here.
        for key in ("checkpoint_dir", "cache_dir", "data_path"):
            if self.final_config_dict.get(key):
                self.final_config_dict[key] = os.path.abspath(self.final_config_dict[key])
        self._validate()

    def _resolve_data_path(self):
        """Find `<data_path>/<dataset>/<dataset>.inter`; fail early with the places searched (RecBole itself would
        try to download an unknown dataset and wait for an answer on stdin)."""
        name = self.dataset
        explicit = self.external_config_dict.get("data_path")
        candidates = [explicit] if explicit else [os.path.abspath("dataset"), REPO_DATASET_DIR, RECBOLE_EXAMPLE_DIR]
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

    def _validate(self):
        cfg = self.final_config_dict
        # Leave-one-out by time (order: TO) sorts on the time field; RecBole's default load_col leaves it out, and
        # the split then fails deep inside RecBole with "[timestamp] is not exist in interaction".
        inter_columns = (cfg.get("load_col") or {}).get("inter")
        if cfg["eval_args"].get("order") == "TO" and inter_columns and cfg["TIME_FIELD"] not in inter_columns:
            raise ValueError(
                f"Inconsistent config for dataset '{self.dataset}': eval_args.order is TO (leave-one-out by time) but "
                f"load_col.inter {list(inter_columns)} does not load the time field '{cfg['TIME_FIELD']}'. Add it, "
                f"e.g. load_col: {{inter: [user_id, item_id, {cfg['TIME_FIELD']}]}} in a --config_files yaml."
            )
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
            beam_key = self.model_class.beam_width_key(cfg)
            beam, max_k = cfg.get(beam_key) if beam_key else None, max(cfg["topk"])
            if beam is not None and beam < max_k:
                raise ValueError(
                    f"Inconsistent config: {beam_key} ({beam}) must be >= the largest topk ({max_k}); "
                    f"raise `{beam_key}` or lower `topk`."
                )
            mode = cfg["eval_args"].get("mode", "full")
            if any(m != "full" for m in (mode.values() if isinstance(mode, dict) else [mode])):
                raise ValueError(
                    f"Generative models rank the whole catalogue: eval_args.mode must be 'full', got {mode!r}."
                )
