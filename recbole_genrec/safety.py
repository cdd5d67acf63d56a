"""Inputs are data, never code: the rails around what RecBole 1.2.1 would execute.

RecBole `eval`s config values given on the command line, in a config_dict or a hyper file, resolves
`!!python/name:` tags in yaml files, and unpickles checkpoints and its dataset / data-loader caches without
restriction. Here config values are read as Python literals only (`parse_value`), yaml files with a safe loader
(`ConfigYamlLoader`, `load_config_yaml`), checkpoints with an allow-listed unpickler (`load_checkpoint`), and
RecBole's pickled dataset / data-loader files never (whole pickles of Dataset objects cannot pass that allow-list):
datasets are built from their atomic files, and the options that name such a pickle to read are refused.
`apply()` installs all of it into RecBole (recbole_genrec/compat.py calls it on import).
"""
import ast
import functools
import importlib
import pickle
import re
import threading
from enum import Enum

import numpy as np
import torch
import yaml


def apply():
    literal_config_values()
    safe_recbole_loading()


# ---- config values: literals only --------------------------------------------------------------------------------
# What RecBole keeps of an `eval`ed value; anything else (a set, bytes) stays the string it was given, as in RecBole.
_CONFIG_VALUE_TYPES = (str, int, float, list, tuple, dict, bool, Enum)


def _config_enums():
    """The enum classes RecBole's `eval` could name in its configurator's namespace (ModelType, InputType, ...)."""
    import recbole.config.configurator as configurator

    return {name: value for name, value in vars(configurator).items()
            if isinstance(value, type) and issubclass(value, Enum) and value is not Enum}


def parse_value(text):
    """A setting given as text (the command line, a config_dict, a hyper file, a results CSV), read as RecBole's
    `Config._convert_config_dict` reads it but with `ast.literal_eval` in place of `eval`: numbers, strings, lists,
    tuples, dicts, booleans and None are parsed (`1e-3`, `[5,10]`, `{'inter': [...]}`, `True`),
    `ModelType.GENERAL`-style names give the enum member (a name lookup), `true`/`false` give booleans and
    `null`/`~` None (as yaml reads them; `none` stays the string several settings name, e.g. `lr_scheduler: none`);
    anything else is the string itself, never executed (`CE`)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # e.g. {[1]: 2}: unhashable key
        enum_name, _, member = text.strip().partition(".")
        enum_class = _config_enums().get(enum_name)
        if enum_class is not None and member in enum_class.__members__:
            return enum_class[member]
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return None if lowered in ("null", "~") else text
    if value is not None and not isinstance(value, _CONFIG_VALUE_TYPES):
        return text  # a set, bytes: RecBole keeps the string too
    return value


def _convert_config_dict(self, config_dict):
    """`Config._convert_config_dict` (config_dict and command-line values), literals only."""
    for key in config_dict:
        if isinstance(config_dict[key], str):
            config_dict[key] = parse_value(config_dict[key])
    return config_dict


class ConfigYamlLoader(yaml.SafeLoader):
    """RecBole's yaml loader (`Config._build_yaml_loader`: `1e-3` is a float) on PyYAML's safe loader: plain YAML
    and `!!python/tuple` (and the other literal `!!python/...` scalar tags); object tags such as
    `!!python/name:os.system`, which RecBole's FullLoader resolves, are refused."""


ConfigYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        """^(?:
     [-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\\.[0-9_]*
    |[-+]?\\.(?:inf|Inf|INF)
    |\\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
for _tag, _construct in {
    "none": yaml.SafeLoader.construct_yaml_null, "bool": yaml.SafeLoader.construct_yaml_bool,
    "int": yaml.SafeLoader.construct_yaml_int, "float": yaml.SafeLoader.construct_yaml_float,
    "str": yaml.SafeLoader.construct_scalar, "unicode": yaml.SafeLoader.construct_scalar,
    "list": yaml.SafeLoader.construct_yaml_seq, "dict": yaml.SafeLoader.construct_yaml_map,
    "tuple": lambda loader, node: tuple(loader.construct_sequence(node)),
}.items():
    ConfigYamlLoader.add_constructor(f"tag:yaml.org,2002:python/{_tag}", _construct)


def _build_yaml_loader(self=None):
    """`Config._build_yaml_loader` (`self` unused: config.py calls it unbound)."""
    return ConfigYamlLoader


def load_config_yaml(file, loader=ConfigYamlLoader):
    """A config yaml file's values; a refused tag or a syntax error is a ValueError naming the file and line."""
    with open(file, "r", encoding="utf-8") as handle:
        text = handle.read()
    try:
        return yaml.load(text, Loader=loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f", line {mark.line + 1}" if mark else ""
        if isinstance(error, yaml.constructor.ConstructorError):
            raise ValueError(
                f"{file}{line}: {error.problem}. Config files are read as plain YAML values (numbers, strings, "
                f"lists, dicts, booleans, null); Python object tags such as !!python/name or !!python/object "
                f"are refused."
            ) from None
        context = f" ({error.context})" if error.context else ""
        raise ValueError(f"{file}{line}: YAML syntax error: {error.problem}{context}. Fix the file's YAML "
                         f"syntax.") from None


def _load_config_files(self, file_list):
    """`Config._load_config_files`: the same merge, with a refused yaml tag or a syntax error reported with its
    file and line."""
    file_config_dict = dict()
    for file in file_list or ():
        file_config_dict.update(load_config_yaml(file, self.yaml_loader))
    return file_config_dict


def _build_space_from_file(file):
    """RecBole's `HyperTuning._build_space_from_file` (same format), `choice` lists read with `ast.literal_eval`
    (RecBole `eval`s them)."""
    from hyperopt import hp

    space = {}
    with open(file, "r") as handle:
        for number, line in enumerate(handle, 1):
            para_list = line.strip().split(" ")
            if len(para_list) < 3:
                continue
            para_name, para_type, para_value = para_list[0], para_list[1], "".join(para_list[2:])
            if para_type == "choice":
                try:
                    para_value = ast.literal_eval(para_value)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    raise ValueError(f"{file}:{number}: choice values must be a Python list literal, got "
                                     f"{para_value!r}") from None
                space[para_name] = hp.choice(para_name, para_value)
            elif para_type == "uniform":
                low, high = para_value.strip().split(",")
                space[para_name] = hp.uniform(para_name, float(low), float(high))
            elif para_type == "quniform":
                low, high, q = para_value.strip().split(",")
                space[para_name] = hp.quniform(para_name, float(low), float(high), float(q))
            elif para_type == "loguniform":
                low, high = para_value.strip().split(",")
                space[para_name] = hp.loguniform(para_name, float(low), float(high))
            else:
                raise ValueError("Illegal param type [{}]".format(para_type))
    return space


def _module_class_lookup(module):
    """An `eval` for `module` that only names one of its network classes (`eval(config['teacher'])`)."""

    def lookup(expression):
        found = vars(module).get(str(expression).strip())
        if isinstance(found, type) and issubclass(found, torch.nn.Module):
            return found
        raise ValueError(f"{module.__name__}: `teacher` must name one of its network classes (CrossNet, CIN), "
                         f"got {expression!r}")

    lookup._recbole_genrec_safe = True
    return lookup


def literal_config_values():
    """Every config value RecBole would `eval` (command line, config_dict, RecBole's hyper files; Ray trials pass
    theirs as config_dict) is read as a literal, and yaml files with `ConfigYamlLoader`. RecBole's KD_DAGFM
    `eval`s its `teacher` value: there, `eval` only looks up a class of its module by name."""
    from recbole.config.configurator import Config
    from recbole.model.context_aware_recommender import kd_dagfm
    from recbole.trainer.hyper_tuning import HyperTuning

    Config._convert_config_dict = _convert_config_dict
    Config._build_yaml_loader = _build_yaml_loader
    Config._load_config_files = _load_config_files
    HyperTuning._build_space_from_file = staticmethod(_build_space_from_file)
    if not getattr(vars(kd_dagfm).get("eval"), "_recbole_genrec_safe", False):
        kd_dagfm.eval = _module_class_lookup(kd_dagfm)  # a module global shadows the builtin in that module only


# ---- checkpoints: an allow-listed unpickler ----------------------------------------------------------------------
# torch's weights-only unpickler (`weights_only=True`) cannot read RecBole's checkpoints: RecBole saves them with
# pickle protocol 4, whose opcodes (FRAME, ...) it does not implement. So they are read by Python's unpickler with
# `find_class` restricted to torch's weights-only allow-list plus the globals below: found by unpickling the
# checkpoints of tiny SASRec, TIGER, Pop and EASE runs and listing every global outside torch's list.
def _numpy_multiarray():
    try:
        return importlib.import_module("numpy._core.multiarray")  # numpy >= 2
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")


@functools.lru_cache(maxsize=None)
def _data_globals():
    """{pickled name: resolver} of the plain-data types: numpy scalars (the best validation score, tuned values in
    the config), dtypes and arrays, the scipy sparse matrices and numpy arrays RecBole's traditional models keep
    in `other_parameter` (EASE, ItemKNN), and the enums RecBole's Config stores (MODEL_TYPE, eval_type, ...)."""
    from recbole.utils import enum_type

    table = {}
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2 and numpy 1 spellings
        for attr in ("scalar", "_reconstruct"):
            table[f"{module}.{attr}"] = lambda attr=attr: getattr(_numpy_multiarray(), attr)
    for attr in ("dtype", "ndarray", "matrix"):
        table[f"numpy.{attr}"] = lambda attr=attr: getattr(np, attr)
    for fmt in ("csr", "csc", "coo"):
        for module in (f"scipy.sparse._{fmt}", f"scipy.sparse.{fmt}"):  # scipy >= 1.8 and older
            table[f"{module}.{fmt}_matrix"] = lambda fmt=fmt: getattr(importlib.import_module("scipy.sparse"),
                                                                       f"{fmt}_matrix")
    for name, value in vars(enum_type).items():
        if isinstance(value, type) and issubclass(value, Enum) and value.__module__ == enum_type.__name__:
            table[f"{enum_type.__name__}.{name}"] = lambda value=value: value
    return table


# RecBole's Config (and GenRecConfig): rebuilt as pickle rebuilds it (instance, then its __dict__), never called.
_CONFIG_CLASSES = {"recbole.config.configurator.Config": ("recbole.config.configurator", "Config"),
                   "recbole_genrec.config.GenRecConfig": ("recbole_genrec.config", "GenRecConfig")}
# Classes a Config names (`yaml_loader`, `model_class`): placeholders while unpickling, classes afterwards.
_YAML_LOADERS = ("yaml.loader.FullLoader", "yaml.loader.SafeLoader", "yaml.cyaml.CFullLoader",
                 "yaml.cyaml.CSafeLoader", f"{__name__}.ConfigYamlLoader",
                 "recbole_genrec.compat.ConfigYamlLoader")  # its home in checkpoints written before safety.py
_MODEL_MODULES = ("recbole.model.", "recbole_genrec.model.")

_loading = threading.local()
_checkpoint_globals = {}


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name, called=False):
        super().__init__(name)
        self.name, self.called = name, called


class _ClassRef:
    """Stands for a class a checkpoint names but must not call while it is unpickled (any call is refused)."""

    def __init__(self, name, target):
        self.name, self.target = name, target

    def __call__(self, *args, **kwargs):
        raise _RefusedGlobal(self.name, called=True)

    def __repr__(self):
        return f"<class reference {self.name}>"


_config_shells = {}


def _config_shell(cls):
    """A subclass of `cls` for unpickling: pickle creates the instance (`__new__`) and sets its __dict__; a call
    (which would run Config.__init__ on the file's arguments) is refused. The instance becomes a `cls` after."""
    if cls not in _config_shells:
        name = f"{cls.__module__}.{cls.__qualname__}"

        def __new__(shell, *args, **kwargs):
            instance = object.__new__(shell)
            getattr(_loading, "configs", []).append(instance)
            return instance

        def __init__(self, *args, **kwargs):
            raise _RefusedGlobal(name, called=True)

        _config_shells[cls] = type(cls.__name__, (cls,), {"__new__": __new__, "__init__": __init__,
                                                         "__module__": __name__, "_real_class": cls})
    return _config_shells[cls]


def _model_class(module, name):
    """The RecBole or plugin model class `module.name`, or None."""
    if not module.startswith(_MODEL_MODULES):
        return None
    from recbole.model.abstract_recommender import AbstractRecommender

    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) and issubclass(found, AbstractRecommender) else None


def _checkpoint_global(module, name):
    full = f"{module}.{name}"
    if full in _checkpoint_globals:
        return _checkpoint_globals[full]
    from torch._weights_only_unpickler import _get_allowed_globals

    found = _get_allowed_globals().get(full)
    if found is None and full in _data_globals():
        found = _data_globals()[full]()
    elif found is None and full in _CONFIG_CLASSES:
        found = _config_shell(getattr(importlib.import_module(_CONFIG_CLASSES[full][0]), _CONFIG_CLASSES[full][1]))
    elif found is None and full in _YAML_LOADERS:
        found = _ClassRef(full, ConfigYamlLoader)  # a loaded config reads yaml safely whatever it was saved with
    elif found is None and _model_class(module, name) is not None:
        found = _ClassRef(full, _model_class(module, name))
    if found is None:
        raise _RefusedGlobal(full)
    _checkpoint_globals[full] = found
    return found


class _CheckpointUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return _checkpoint_global(module, name)


def _restricted_pickle_module():
    import types

    module = types.ModuleType(f"{__name__}.restricted_pickle")
    module.Unpickler = _CheckpointUnpickler
    module.load = lambda file, **kwargs: _CheckpointUnpickler(file, **kwargs).load()
    return module


_RESTRICTED_PICKLE = _restricted_pickle_module()


def load_checkpoint(path, map_location=None):
    """Load a checkpoint written by RecBole or this plugin, unpickling only allow-listed globals: torch's
    weights-only list (tensors, storages, dtypes, devices, OrderedDict) plus RecBole's Config (rebuilt, never
    called), the enums it stores, numpy / scipy data, and the model class and yaml loader a Config names (bound
    after unpickling). Anything else (e.g. a pickle whose `__reduce__` calls `os.system`) is refused with a
    ValueError before it runs.

    A stored Config is data, never consent: one that names a RecBole pickle to read (`dataset_save_path`,
    `dataloaders_save_path`) is refused, and its `save_dataset` / `save_dataloaders` are switched off (reloading a
    model writes no RecBole pickles)."""
    _loading.configs = []
    try:
        checkpoint = torch.load(path, map_location=map_location, pickle_module=_RESTRICTED_PICKLE,
                                weights_only=False)  # restricted by _RESTRICTED_PICKLE instead (see above)
        configs = _loading.configs
    except (RuntimeError, EOFError) as error:  # torch's zip reader on a cut file, pickle's end of a legacy one
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"Cannot read checkpoint {path}: the file is truncated or is not a torch checkpoint "
                         f"({reason}). Use the complete .pth file a finished run wrote.") from None
    except _RefusedGlobal as error:
        action = "calls" if error.called else "needs the Python global"
        raise ValueError(
            f"Refusing to load checkpoint {path}: it {action} `{error.name}`, which is not one of the types "
            f"RecBole's and recbole_genrec's checkpoints hold (tensors, RecBole's Config and enums, numpy and "
            f"scipy arrays); unpickling it could run arbitrary code. Re-train the model, or load a checkpoint you "
            f"trust (if you trust this file: torch.load(path, weights_only=False))."
        ) from None
    except pickle.UnpicklingError as error:
        raise ValueError(f"Refusing to load checkpoint {path}: it is not a checkpoint RecBole or recbole_genrec "
                         f"wrote ({error}). Re-train the model, or load a checkpoint you trust.") from None
    finally:
        _loading.configs = []
    for config in configs:  # the shells become Configs; the classes they name are bound
        config.__class__ = type(config)._real_class
        for key, value in list(vars(config).items()):
            if isinstance(value, _ClassRef):
                vars(config)[key] = value.target
        refuse_recbole_pickle_paths(config, f"Refusing to load checkpoint {path}: its stored config")
        for key in _RECBOLE_PICKLE_WRITES:
            if key in config:
                config[key] = False
    return checkpoint


# ---- RecBole's own loads -----------------------------------------------------------------------------------------
def _recbole_evaluate(evaluate):
    @functools.wraps(evaluate)
    def wrapper(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data and load_best_model:  # RecBole's own reload, through load_checkpoint
            checkpoint_file = model_file or self.saved_model_file
            checkpoint = load_checkpoint(checkpoint_file, self.device)
            self.model.load_state_dict(checkpoint["state_dict"])
            self.model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")
        return evaluate(self, eval_data, load_best_model=False, model_file=model_file, show_progress=show_progress)

    wrapper._recbole_genrec_safe = True
    return wrapper


def _recbole_resume_checkpoint(self, resume_file):
    """RecBole's `Trainer.resume_checkpoint`, loading through load_checkpoint."""
    resume_file = str(resume_file)
    self.saved_model_file = resume_file
    checkpoint = load_checkpoint(resume_file, self.device)
    self.start_epoch = checkpoint["epoch"] + 1
    self.cur_step = checkpoint["cur_step"]
    self.best_valid_score = checkpoint["best_valid_score"]
    if checkpoint["config"]["model"].lower() != self.config["model"].lower():
        self.logger.warning("Architecture configuration given in config file is different from that of checkpoint. "
                            "This may yield an exception while state_dict is being loaded.")
    self.model.load_state_dict(checkpoint["state_dict"])
    self.model.load_other_parameter(checkpoint.get("other_parameter"))
    self.optimizer.load_state_dict(checkpoint["optimizer"])
    self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")


# RecBole's options that make it unpickle a dataset or data-loader file (recbole.data.utils), and those that make
# it write one. Those pickles hold whole Dataset and DataLoader objects, which no allow-list can admit safely.
_RECBOLE_PICKLE_READS = ("dataset_save_path", "dataloaders_save_path")
_RECBOLE_PICKLE_WRITES = ("save_dataset", "save_dataloaders")


def refuse_recbole_pickle_paths(config, source):
    """A ValueError when `config` names a RecBole pickle to read; `source` says whose settings they are."""
    for key in _RECBOLE_PICKLE_READS:
        value = config[key] if key in config else None
        if value:
            raise ValueError(
                f"{source} sets {key}={value!r}: RecBole would unpickle that file, and a pickle can run arbitrary "
                f"code. recbole_genrec never reads RecBole's pickled datasets or data loaders (the dataset is built "
                f"from its atomic files; the costly parts, text embeddings and semantic IDs, have their own "
                f"caches): remove {key}."
            )


def _guarded_create_dataset(create_dataset):
    @functools.wraps(create_dataset)
    def wrapper(config):
        # RecBole unpickles `dataset_save_path` or <checkpoint_dir>/<dataset>-<class>.pth whenever it exists: the
        # same dataset class is built from the files instead; `save_dataset` still writes RecBole's pickle.
        refuse_recbole_pickle_paths(config, "The run's config")
        dataset_module = importlib.import_module("recbole.data.dataset")
        if hasattr(dataset_module, config["model"] + "Dataset"):
            dataset = getattr(dataset_module, config["model"] + "Dataset")(config)
        else:
            from recbole.utils import ModelType

            type2class = {ModelType.GENERAL: "Dataset", ModelType.SEQUENTIAL: "SequentialDataset",
                          ModelType.CONTEXT: "Dataset", ModelType.KNOWLEDGE: "KnowledgeBasedDataset",
                          ModelType.TRADITIONAL: "Dataset", ModelType.DECISIONTREE: "Dataset"}
            dataset = getattr(dataset_module, type2class[config["MODEL_TYPE"]])(config)
        if config["save_dataset"]:
            dataset.save()
        return dataset

    wrapper._recbole_genrec_safe = True
    return wrapper


def _guarded_load_split_dataloaders(load_split_dataloaders):
    @functools.wraps(load_split_dataloaders)
    def wrapper(config):
        # Never <checkpoint_dir>/<dataset>-for-<model>-dataloader.pth, a pickle RecBole loads whenever it exists:
        # the split is made again (`save_dataloaders` still writes RecBole's pickle).
        refuse_recbole_pickle_paths(config, "The run's config")
        return None

    wrapper._recbole_genrec_safe = True
    return wrapper


def safe_recbole_loading():
    """RecBole's trainer reloads checkpoints with `torch.load` (which cannot read them on torch >= 2.6): through
    `load_checkpoint` instead. RecBole's dataset and data-loader pickles (full pickles, loaded whenever the file
    exists) are never read: `create_dataset` builds from the atomic files, `load_split_dataloaders` finds nothing,
    and `dataset_save_path` / `dataloaders_save_path` are refused."""
    import sys

    import recbole.data
    import recbole.data.utils as data_utils
    from recbole.trainer.trainer import Trainer

    if not getattr(Trainer.evaluate, "_recbole_genrec_safe", False):
        Trainer.evaluate = _recbole_evaluate(Trainer.evaluate)
    Trainer.resume_checkpoint = _recbole_resume_checkpoint
    for name, guard in (("create_dataset", _guarded_create_dataset),
                        ("load_split_dataloaders", _guarded_load_split_dataloaders)):
        original = getattr(data_utils, name)
        if getattr(original, "_recbole_genrec_safe", False):
            continue
        guarded = guard(original)
        for module_name in ("recbole.data.utils", "recbole.data", "recbole.quick_start.quick_start",
                            "recbole.quick_start"):
            module = sys.modules.get(module_name)
            if module is not None and getattr(module, name, None) is original:
                setattr(module, name, guarded)
