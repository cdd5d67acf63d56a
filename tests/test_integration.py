"""The plugin inside RecBole: registry, config, evaluator parity with stock RecBole, quick start, CLI, errors."""
import csv

import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset as recbole_create_dataset
from recbole.data import data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed

from recbole_genrec import registry
from recbole_genrec.cli import run as cli_main
from recbole_genrec.cli import parse_args
from recbole_genrec.config import GenRecConfig
from recbole_genrec.quick_start import run_recbole_genrec
from recbole_genrec.trainer import GenRecTrainer, topk_hits

from conftest import TINY_TIGER


def test_registry_resolves_plugin_then_recbole_models():
    assert registry.get_model("TIGER").__name__ == "TIGER"
    assert registry.get_model("SASRec") is SASRec
    assert registry.get_model("GRU4Rec").__name__ == "GRU4Rec"
    assert registry.get_trainer(SASRec.type, "SASRec") is GenRecTrainer


def test_unknown_model_error_lists_available_models():
    with pytest.raises(ValueError) as error:
        registry.get_model("TIGRE")
    assert "TIGRE" in str(error.value) and "TIGER" in str(error.value) and "SASRec" in str(error.value)


def test_unknown_dataset_error_names_dataset_and_places(tiny):
    with pytest.raises(ValueError, match="no-such-data"):
        GenRecConfig(model="SASRec", dataset="no-such-data", config_dict=tiny(dataset="no-such-data"))


def test_beam_smaller_than_topk_is_rejected(tiny):
    with pytest.raises(ValueError, match="beam_size"):
        GenRecConfig(model="TIGER", dataset="tiny-beauty", config_dict=tiny(beam_size=5, topk=[5, 10]))


@pytest.mark.parametrize("key, value", [("tokenizer_fit_on", "trian"), ("lr_scheduler", "cosin"),
                                        ("rpg_inference", "grpah"), ("mixed_precision", "fp16"),
                                        ("cf_untrained_items", "zeros")])
def test_misspelt_choice_is_rejected_before_any_data_is_read(tiny, key, value):
    with pytest.raises(ValueError, match=f"Unknown {key} '{value}': choose one of"):
        GenRecConfig(model="RPG", dataset="tiny-beauty", config_dict=tiny(**{key: value}))


def test_beam_check_follows_the_decoding_that_runs(tiny):
    # RPG's graph decoding (its default test ranking) keeps num_beams candidates; exact scoring ranks the whole
    # catalogue (no beam)
    with pytest.raises(ValueError, match=r"num_beams \(20\) must be >= the largest topk \(50\)"):
        GenRecConfig(model="RPG", dataset="tiny-beauty", config_dict=tiny(topk=[10, 50]))
    assert GenRecConfig(model="RPG", dataset="tiny-beauty",
                        config_dict=tiny(topk=[10, 50], rpg_inference="Exact"))["rpg_inference"] == "exact"
    assert GenRecConfig(model="LIGER", dataset="tiny-beauty",
                        config_dict=tiny(topk=[10, 50], liger_inference="dense"))["liger_inference"] == "dense"


def _copy_inter(tmp_path, edit):
    """A copy of tiny-beauty's .inter with its lines passed through `edit` (SASRec reads no .item file)."""
    import os

    from conftest import FIXTURES

    folder = tmp_path / "edited"
    folder.mkdir()
    lines = open(os.path.join(FIXTURES, "tiny-beauty", "tiny-beauty.inter")).read().splitlines()
    (folder / "edited.inter").write_text("\n".join(edit(lines)) + "\n")
    return str(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:5] + [lines[5].rsplit("\t", 1)[0]] + lines[6:], "Malformed line 6 .*2 tab-separated columns"),
    (lambda lines: lines[:5] + [lines[5] + "\textra"] + lines[6:], "Malformed line 6 .*4 tab-separated columns"),
    (lambda lines: lines[:5] + [lines[5].rsplit("\t", 1)[0] + "\t"] + lines[6:], "Line 6 .*no value for field 'timestamp'"),
    (lambda lines: lines[:1], "has a header but no interactions"),
    (lambda lines: [], "is empty"),
])
def test_malformed_interaction_file_is_named_before_recbole_reads_it(tmp_path, tiny, edit, message):
    from recbole_genrec.data import create_dataset

    config = GenRecConfig(model="SASRec", dataset="edited",
                          config_dict=tiny(dataset="edited", data_path=_copy_inter(tmp_path, edit)))
    with pytest.raises(ValueError, match=message):
        create_dataset(config)


def test_time_order_without_the_time_field_is_rejected(tiny):
    with pytest.raises(ValueError, match="does not load the time field 'timestamp'"):
        GenRecConfig(model="SASRec", dataset="tiny-beauty",
                     config_dict=tiny(load_col={"inter": ["user_id", "item_id"]}))


def test_text_model_on_a_dataset_without_item_file_names_the_missing_file(tmp_path, tiny):
    from recbole_genrec.representation import item_text_embeddings

    (tmp_path / "no-text").mkdir()
    (tmp_path / "no-text" / "no-text.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\n")
    config = GenRecConfig(model="LIGER", dataset="no-text", config_dict=tiny(dataset="no-text",
                                                                              data_path=str(tmp_path), text_fields=[]))
    with pytest.raises(ValueError, match="no-text.item does not exist"):
        item_text_embeddings(config, dataset=None)


def test_plugin_properties_overlay_and_absolute_paths(tiny):
    config = GenRecConfig(model="TIGER", dataset="tiny-beauty", config_dict=tiny())
    assert config["tokenizer"] == "RQVAE" and config["num_encoder_layers"] == 4  # from TIGER.yaml
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"} and config["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    assert config["train_neg_sample_args"]["distribution"] == "none"  # CE: no negative sampling
    assert config["cache_dir"].startswith("/") and config["checkpoint_dir"].startswith("/")


def test_cli_parses_recbole_style_overrides():
    options, overrides = parse_args(["--model=TIGER,SASRec", "--epochs=1", "--learning_rate=1e-3",
                                     "--topk=[5,10]", "--show_progress=true", "--dataset", "ml-100k"])
    assert options == {"model": "TIGER,SASRec", "dataset": "ml-100k"}
    assert overrides == {"epochs": 1, "learning_rate": 1e-3, "topk": [5, 10], "show_progress": True}


def _stock_recbole_sasrec(config_dict):
    """SASRec through stock RecBole only: RecBole's Config, dataset, Trainer and evaluator."""
    config = Config(model="SASRec", dataset="tiny-beauty", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    dataset = recbole_create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    trainer.fit(train_data, valid_data, saved=False)
    return trainer, model, test_data, trainer.evaluate(test_data, load_best_model=False)


def _recbole_topk_matrix(topk_items, positive_u, positive_i, n_items):
    """`rec.topk` as RecBole's Collector builds it (a [B, n_items] matrix of positives, gathered at the ranked
    items; the former generative path, with -1 = no item)."""
    pos_matrix = torch.zeros((topk_items.shape[0], n_items), dtype=torch.int)
    pos_matrix[positive_u, positive_i] = 1
    pos_len_list = pos_matrix.sum(dim=1, keepdim=True)
    pos_idx = torch.gather(pos_matrix, dim=1, index=topk_items.clamp(min=0)) * (topk_items >= 0)
    return torch.cat((pos_idx, pos_len_list), dim=1)


def test_topk_lists_give_recbole_collector_structure_and_metrics_bit_for_bit():
    """Generative top-k lists go into `rec.topk` by a lookup among the batch's positives, not a [B, n_items]
    matrix: the same tensor (values and dtype), hence RecBole's metric classes give identical numbers."""
    from recbole.evaluator.collector import DataStruct
    from recbole.evaluator.metrics import MAP, MRR, NDCG, Hit, Precision, Recall

    generator = torch.Generator().manual_seed(0)
    n_items, users, k = 300, 97, 10
    topk_items = torch.randint(1, n_items, (users, k), generator=generator)
    topk_items[::5, 7:] = -1  # rows with fewer than k items
    topk_items[3, 4] = topk_items[3, 2]  # an item twice in one list
    positive_u = torch.cat([torch.arange(users), torch.randint(0, users, (60,), generator=generator)])
    positive_i = torch.randint(1, n_items, (len(positive_u),), generator=generator)
    hit_rows = torch.arange(0, users, 2)  # half the users: a positive inside their list
    positive_u = torch.cat([positive_u, hit_rows, hit_rows[:5]])
    positive_i = torch.cat([positive_i, topk_items[hit_rows, 1], topk_items[hit_rows[:5], 1]])  # some pairs twice
    expected = _recbole_topk_matrix(topk_items, positive_u, positive_i, n_items)
    found = topk_hits(topk_items, positive_u, positive_i, n_items)
    assert found.dtype == expected.dtype and torch.equal(found, expected)
    assert expected[:, :k].sum() > users // 2  # the lists do hit
    config = {"topk": [1, 5, 10], "metric_decimal_place": 8}
    for metric in (Recall, NDCG, MRR, Hit, Precision, MAP):
        results = []
        for topk in (found, expected):
            struct = DataStruct()
            struct.set("rec.topk", topk)
            results.append(metric(config).calculate_metric(struct))
        assert results[0] == results[1]


def test_sasrec_through_plugin_equals_stock_recbole(tiny, monkeypatch):
    monkeypatch.setattr("sys.argv", ["pytest"])  # stock RecBole's Config parses the command line (pytest's here)
    protocol = {"eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
                "metrics": ["Recall", "NDCG", "Hit", "MRR"], "topk": [5, 10], "valid_metric": "NDCG@10",
                "train_neg_sample_args": None, "loss_type": "CE", "epochs": 2}
    config_dict = tiny(**protocol)
    stock_trainer, stock_model, test_data, stock_result = _stock_recbole_sasrec(dict(config_dict))
    plugin = run_recbole_genrec("SASRec", "tiny-beauty", config_dict=dict(config_dict), saved=False)
    assert plugin["test_result"] == stock_result  # same training, same split, bit-identical metrics
    # And the plugin's evaluator on stock RecBole's trained model gives stock RecBole's numbers exactly.
    plugin_eval = GenRecTrainer(stock_trainer.config, stock_model).evaluate(test_data, load_best_model=False)
    assert plugin_eval == stock_result
    assert stock_result["recall@10"] > 0


def test_tiger_one_epoch_and_checkpoint_reload(tiny):
    from recbole_genrec.quick_start import load_data_and_model

    result = run_recbole_genrec("TIGER", "tiny-beauty", config_dict=tiny(**TINY_TIGER))
    metrics = result["test_result"]
    assert set(metrics) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert result["semantic_id_quality"]["n_items"] == 287
    config, model, dataset, _, _, test_data = load_data_and_model(result["checkpoint"])
    assert torch.equal(model.item_codes, dataset.semantic_ids.codes)
    trainer = GenRecTrainer(config, model)
    assert trainer.evaluate(test_data, load_best_model=False) == metrics
    # weights trained on other semantic IDs (a refitted tokenizer) are refused, not silently mis-mapped
    state = {key: value.clone() for key, value in model.state_dict().items()}
    state["item_codes"][1:] = state["item_codes"][1:].roll(1, dims=0)
    with pytest.raises(ValueError, match="checkpoint's semantic IDs differ from the dataset's"):
        model.load_state_dict(state)


def test_cli_side_by_side_writes_table_csv_and_plot(tiny, workdir, capsys):
    overrides = tiny(**TINY_TIGER)
    argv = ["--model=TIGER,SASRec", "--dataset=tiny-beauty", f"--results_file={workdir / 'side.csv'}"]
    for key, value in overrides.items():
        if key != "dataset":
            argv.append(f"--{key}={value!r}" if not isinstance(value, str) else f"--{key}={value}")
    rows = cli_main(argv)
    assert [row["model"] for row in rows] == ["TIGER", "SASRec"]
    with open(workdir / "side.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [row["model"] for row in table] == ["TIGER", "SASRec"]
    assert {"test_recall@10", "test_ndcg@10", "train_seconds", "test_eval_seconds", "parameters"} <= set(table[0])
    assert (workdir / "side.png").stat().st_size > 1000
    assert "TIGER" in capsys.readouterr().out


def test_cli_script_reports_bad_input_without_traceback():
    import os
    import subprocess
    import sys

    from conftest import ROOT

    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_genrec.py"), "--model=NoSuchModel"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert completed.returncode != 0
    assert "Unknown model 'NoSuchModel'" in completed.stderr and "SASRec" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_quick_start_profile_is_per_model():
    from recbole_genrec.cli import load_profile

    tiger, rpg, letter = load_profile("TIGER"), load_profile("RPG"), load_profile("LETTER")
    assert tiger["tokenizer"] == "RQKMeans" and tiger["epochs"] == rpg["epochs"]
    assert "tokenizer" not in rpg  # RPG keeps its own OPQ tokenizer
    assert GenRecConfig(model="RPG", dataset="ml-100k", config_dict=rpg)["tokenizer"] == "OPQ"
    # LETTER's CF alignment needs the CF width to equal the tokenizer's latent width, in the profile too
    assert letter["cf_params"]["hidden_size"] == letter["tokenizer_params"]["latent_dim"]


def test_quick_start_dataset_is_the_one_each_model_needs():
    from recbole_genrec.cli import load_profile, quickstart_dataset

    assert quickstart_dataset(["TIGER", "SASRec"]) == "ml-100k"
    assert quickstart_dataset(["MQL4GRec"]) == "amazon-instruments-mm"  # its published codes ship with it
    assert "dataset" not in load_profile("MQL4GRec")  # picks the dataset, is not a config setting
    with pytest.raises(ValueError, match="TIGER: ml-100k, MQL4GRec: amazon-instruments-mm.*--dataset"):
        quickstart_dataset(["TIGER", "MQL4GRec"])


def test_missing_profile_file_is_a_clear_error(tmp_path):
    from recbole_genrec.cli import run

    with pytest.raises(ValueError, match="Profile file not found"):
        run(["--model=SASRec", "--dataset=ml-100k", f"--profile={tmp_path / 'nope.yaml'}"])
