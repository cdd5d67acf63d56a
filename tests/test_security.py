"""Config values and checkpoints are data, never code (recbole_genrec/safety.py).

RecBole 1.2.1 `eval`s config values given on the command line, in a config_dict or in a hyper file, resolves
`!!python/name:` tags in yaml files, and unpickles checkpoints (and its dataset caches) without restriction.
Each hostile input below would create a marker file if it ran."""
import os
import pickle
import sys
import types

import pytest
import torch

from recbole_genrec import safety
from recbole_genrec.config import GenRecConfig

from conftest import FIXTURES, TINY_TIGER, check_run_and_reload


def _command(marker):
    return f"__import__('os').system('touch {marker}') or 0.0"


class _Exploit:
    """Unpickling this runs `touch marker` (what a crafted checkpoint would do with any command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _config_or_error(tiny, **overrides):
    """The config built from hostile overrides, or the ValueError refusing them (either is fine: nothing ran)."""
    try:
        return GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(**overrides))
    except ValueError as error:
        return error


# ---- config values ------------------------------------------------------------------------------------------------
def test_config_dict_value_is_not_executed(tiny, tmp_path):
    marker = tmp_path / "marker"
    result = _config_or_error(tiny, weight_decay=_command(marker))
    assert not marker.exists()
    if isinstance(result, ValueError):
        assert "weight_decay" in str(result)
    else:
        assert result["weight_decay"] == _command(marker)  # a plain string, as RecBole keeps unparsable values


def test_command_line_value_is_not_executed(tiny, tmp_path, monkeypatch):
    """The plugin's CLI (overrides as config_dict) and RecBole's own command-line reading (`Config._load_cmd_line`,
    which `eval`s every `--key=value`)."""
    from recbole.config import Config

    from recbole_genrec.cli import parse_args

    marker = tmp_path / "marker"
    _, overrides = parse_args([f"--weight_decay={_command(marker)}"])
    _config_or_error(tiny, **overrides)
    assert not marker.exists()

    monkeypatch.setattr(sys, "argv", ["run.py", f"--weight_decay={_command(marker)}", "--topk=[5,10]"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))  # Config sets it
    config = Config(model="SASRec", dataset="tiny-beauty", config_dict={"data_path": FIXTURES, "gpu_id": "",
                                                                        "train_neg_sample_args": None})
    assert not marker.exists()
    assert config["weight_decay"] == _command(marker) and config["topk"] == [5, 10]


def test_normal_values_parse_as_in_recbole():
    from recbole.utils import ModelType

    from recbole.config.configurator import Config

    values = {"loss_type": "CE", "topk": "[5,10]", "load_col": "{'inter': ['user_id', 'item_id']}",
              "learning_rate": "1e-3", "reproducibility": "True", "shuffle": "false", "neg": "None", "n": "-2",
              "pair": "(1, 2)", "path": "dataset/ml-100k", "kind": "ModelType.SEQUENTIAL", "odd": "{1, 2}",
              "sum": "1+2", "name": "os.sep", "schedule": "none", "unset": "null"}
    parsed = Config._convert_config_dict(None, dict(values))
    assert parsed == {"loss_type": "CE", "topk": [5, 10], "load_col": {"inter": ["user_id", "item_id"]},
                      "learning_rate": 1e-3, "reproducibility": True, "shuffle": False, "neg": None, "n": -2,
                      "pair": (1, 2), "path": "dataset/ml-100k", "kind": ModelType.SEQUENTIAL,
                      "odd": "{1, 2}",  # RecBole keeps a set's string too
                      "sum": "1+2", "name": "os.sep",  # expressions and names: strings (RecBole evaluated them)
                      "schedule": "none", "unset": None}  # `none` names a choice (lr_scheduler); yaml's null is None


def test_yaml_values_are_not_executed(tiny, tmp_path):
    marker = tmp_path / "marker"
    plain = tmp_path / "plain.yaml"
    plain.write_text(f'weight_decay: "{_command(marker)}"\nlearning_rate: 1e-3\npair: !!python/tuple [1, 2]\n')
    loaded = _config_or_error(tiny)._load_config_files([str(plain)])  # RecBole's reading of --config_files
    assert loaded == {"weight_decay": _command(marker), "learning_rate": 1e-3, "pair": (1, 2)}
    for tag in ("!!python/name:os.system", f"!!python/object/apply:os.system ['touch {marker}']",
                f"!!python/object/new:os.system ['touch {marker}']"):
        hostile = tmp_path / "hostile.yaml"
        hostile.write_text(f"learning_rate: 0.01\nweight_decay: {tag}\n")
        with pytest.raises(ValueError, match=r"hostile\.yaml, line 2: .*python/"):
            GenRecConfig(model="SASRec", dataset="tiny-beauty", config_file_list=[str(hostile)],
                         config_dict=tiny())
    assert not marker.exists()


def test_hyper_file_choice_is_not_executed(tiny, tmp_path, monkeypatch):
    """A string in a hyper file's `choice [...]` reaches every trial's config_dict (`tuning._run_trial`); a
    non-literal choice is refused by the plugin's parser and by RecBole's (`HyperTuning`)."""
    from recbole.trainer.hyper_tuning import HyperTuning

    from recbole_genrec.hyper import merge_params, parse_hyper_file

    marker = tmp_path / "marker"
    path = tmp_path / "space.hyper"
    path.write_text(f'weight_decay choice ["{_command(marker)}", 0.0]\nlearning_rate choice [0.01]\n')
    space = parse_hyper_file(str(path))
    assert space["weight_decay"].values == (_command(marker), 0.0)
    trial = merge_params({"weight_decay": space["weight_decay"].values[0], "learning_rate": 0.01}, {})
    _config_or_error(tiny, **trial)  # what _run_trial builds from a sampled configuration
    assert not marker.exists()

    path.write_text(f"weight_decay choice [{_command(marker)}]\n")
    with pytest.raises(ValueError, match="Python list literal"):
        parse_hyper_file(str(path))
    hyperopt = types.ModuleType("hyperopt")  # RecBole's parser imports hyperopt (not a dependency here)
    hyperopt.hp = types.SimpleNamespace(choice=lambda name, values: values)
    monkeypatch.setitem(sys.modules, "hyperopt", hyperopt)
    with pytest.raises(ValueError, match="Python list literal"):
        HyperTuning._build_space_from_file(str(path))
    assert not marker.exists()


def test_recbole_model_config_eval_is_a_name_lookup(tmp_path):
    """RecBole's KD_DAGFM builds its teacher network with `eval(config['teacher'])`."""
    from recbole.model.context_aware_recommender import kd_dagfm

    marker = tmp_path / "marker"
    assert kd_dagfm.eval("CrossNet") is kd_dagfm.CrossNet and kd_dagfm.eval("CIN") is kd_dagfm.CIN
    with pytest.raises(ValueError, match="teacher"):
        kd_dagfm.eval(_command(marker))
    assert not marker.exists()


def test_ray_workers_parse_literals_only(tmp_path):
    """Ray trials run in fresh interpreters: the worker setup hook installs the literal-only parsing there."""
    import ray

    from recbole_genrec.tuning import init_ray

    marker = str(tmp_path / "marker")

    def in_worker(marker):  # nested: shipped by value; the worker imports only what the hook imported
        from recbole.config.configurator import Config

        value = Config._convert_config_dict(None, {"k": f"__import__('os').system('touch {marker}') or 0.0"})
        return Config._convert_config_dict.__module__, value["k"]

    init_ray(num_cpus=1)
    try:
        module, value = ray.get(ray.remote(num_cpus=1)(in_worker).remote(marker))
    finally:
        ray.shutdown()
    assert module == "recbole_genrec.safety" and value.startswith("__import__")
    assert not os.path.exists(marker)


# ---- checkpoints --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny):
    """One short TIGER run (its checkpoint reloads and scores the same), shared by the checkpoint tests."""
    return check_run_and_reload("TIGER", "tiny-beauty", tiny(**TINY_TIGER))


def test_real_checkpoint_loads_and_evaluates(tiny_run):
    """`check_run_and_reload` already reloaded it through `load_data_and_model` and compared the metrics; here
    what the allow-listed unpickler gives back: the real Config with its model class and a safe yaml loader."""
    from recbole.utils import ModelType

    from recbole_genrec.model.tiger import TIGER

    checkpoint = safety.load_checkpoint(tiny_run["checkpoint"])
    config = checkpoint["config"]
    assert type(config) is GenRecConfig and config.model_class is TIGER
    assert config.yaml_loader is safety.ConfigYamlLoader and config["MODEL_TYPE"] is ModelType.SEQUENTIAL
    assert checkpoint["state_dict"] and checkpoint["optimizer"]["state"]


@pytest.mark.parametrize("legacy", [False, True])
def test_crafted_checkpoint_is_refused(tmp_path, legacy):
    from recbole_genrec.quick_start import load_data_and_model

    marker = tmp_path / "marker"
    path = tmp_path / "model.pth"
    state = {"state_dict": {}, "config": _Exploit(marker)}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy, pickle_protocol=4)
    for load in (safety.load_checkpoint, load_data_and_model):
        with pytest.raises(ValueError) as refused:
            load(str(path))
        assert f"{path}: it needs the Python global `posix.system`" in str(refused.value)
        assert "Re-train the model, or load a checkpoint you trust" in str(refused.value)
    assert not marker.exists()


def test_allowed_classes_are_never_called(tmp_path):
    """A checkpoint may name RecBole's Config and the model class, but pickle's REDUCE calling them (Config
    reads files and the environment; some RecBole models `eval` a config value) is refused."""
    from recbole_genrec.model.tiger import TIGER

    class CallConfig:
        def __reduce__(self):
            return GenRecConfig, ("TIGER", "tiny-beauty")

    class CallModel:
        def __reduce__(self):
            return TIGER, (None, None)

    for payload, name in ((CallConfig(), "recbole_genrec.config.GenRecConfig"),
                          (CallModel(), "recbole_genrec.model.tiger.TIGER")):
        path = tmp_path / "model.pth"
        torch.save({"config": payload}, path)
        with pytest.raises(ValueError, match=rf"it calls `{name}`"):
            safety.load_checkpoint(str(path))


def test_recbole_trainer_loads_through_the_allow_list(tmp_path):
    """RecBole's own Trainer.evaluate / resume_checkpoint (used by its dedicated trainers) go through
    load_checkpoint too."""
    from recbole.trainer.trainer import Trainer

    marker = tmp_path / "marker"
    path = tmp_path / "model.pth"
    torch.save({"state_dict": _Exploit(marker)}, path)
    trainer = types.SimpleNamespace(saved_model_file=str(path), device="cpu")
    with pytest.raises(ValueError, match="posix.system"):
        Trainer.evaluate(trainer, [object()], load_best_model=True)
    with pytest.raises(ValueError, match="posix.system"):
        Trainer.resume_checkpoint(trainer, str(path))
    assert not marker.exists()


def test_recbole_data_pickles_are_never_unpickled(tiny, tmp_path):
    """RecBole unpickles `<checkpoint_dir>/<dataset>-<class>.pth` and `<dataset>-for-<model>-dataloader.pth`
    whenever they exist: never here, not even in a run that writes them (save_dataset / save_dataloaders)."""
    from recbole.data.utils import load_split_dataloaders

    from recbole_genrec.data import create_dataset

    marker = tmp_path / "marker"
    checkpoint_dir = tmp_path / "saved"
    checkpoint_dir.mkdir()
    for name in ("tiny-beauty-SequentialDataset.pth", "tiny-beauty-for-SASRec-dataloader.pth"):
        with open(checkpoint_dir / name, "wb") as handle:
            pickle.dump(_Exploit(marker), handle)
    for write in (False, True):
        config = GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(
            checkpoint_dir=str(checkpoint_dir), save_dataset=write, save_dataloaders=write))
        dataset = create_dataset(config)
        assert dataset.inter_num > 0 and load_split_dataloaders(config) is None
    assert not marker.exists()


@pytest.mark.parametrize("key", ["dataset_save_path", "dataloaders_save_path"])
def test_recbole_pickle_paths_are_refused_before_work(tiny, tmp_path, key):
    """A run's own option naming a RecBole pickle to read is refused when the config is built."""
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as handle:
        pickle.dump(_Exploit(marker), handle)
    with pytest.raises(ValueError, match=rf"The run's config sets {key}=.*evil\.pth.*remove {key}"):
        GenRecConfig(model="SASRec", dataset="tiny-beauty", config_dict=tiny(**{key: str(evil)}))
    assert not marker.exists()


@pytest.mark.parametrize("key", ["dataset_save_path", "dataloaders_save_path"])
def test_checkpoint_settings_never_opt_into_pickles(tiny_run, tmp_path, capsys, key):
    """A real checkpoint whose stored config names a malicious pickle (it passes the unpickler: only plain data
    changed) is refused by load_data_and_model and by `--recommend`, naming the file and the setting; its
    `save_dataset` / `save_dataloaders` (a checkpoint_dir holding RecBole's default-named pickles) read nothing."""
    from recbole_genrec.cli import main
    from recbole_genrec.quick_start import load_data_and_model

    marker = tmp_path / "marker"
    evil_pickle = tmp_path / "cache.pth"
    with open(evil_pickle, "wb") as handle:
        pickle.dump(_Exploit(marker), handle)
    checkpoint = torch.load(tiny_run["checkpoint"], weights_only=False)  # the test's own file: trusted
    checkpoint["config"][key] = str(evil_pickle)
    crafted = tmp_path / "crafted.pth"
    torch.save(checkpoint, crafted, pickle_protocol=4)
    with pytest.raises(ValueError) as refused:
        load_data_and_model(str(crafted))
    assert f"Refusing to load checkpoint {crafted}: its stored config sets {key}=" in str(refused.value)
    assert main([f"--recommend={crafted}", "--users=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert str(crafted) in err and key in err and len(err.splitlines()) == 1
    assert not marker.exists()

    # save_* switched on and checkpoint_dir pointed at RecBole's default-named pickles: the reload reads neither.
    checkpoint["config"][key] = None
    saved = tmp_path / "saved"
    saved.mkdir()
    for name in ("tiny-beauty-SequentialDataset.pth", "tiny-beauty-for-TIGER-dataloader.pth"):
        with open(saved / name, "wb") as handle:
            pickle.dump(_Exploit(marker), handle)
    for write in ("save_dataset", "save_dataloaders"):
        checkpoint["config"][write] = True
    checkpoint["config"]["checkpoint_dir"] = str(saved)
    torch.save(checkpoint, crafted, pickle_protocol=4)
    config, model, *_ = load_data_and_model(str(crafted))
    assert model is not None and not config["save_dataset"] and not config["save_dataloaders"]
    assert not marker.exists()


def test_truncated_checkpoint_is_one_line(tiny_run, tmp_path, capsys):
    from recbole_genrec.cli import main
    from recbole_genrec.quick_start import load_data_and_model

    with open(tiny_run["checkpoint"], "rb") as handle:
        data = handle.read()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"Cannot read checkpoint {truncated}: the file is truncated"):
        load_data_and_model(str(truncated))
    assert main([f"--recommend={truncated}", "--users=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "truncated" in err and str(truncated) in err
