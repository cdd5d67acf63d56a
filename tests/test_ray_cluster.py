"""A search on a Ray cluster that was started before it (`--ray_address`): two nodes on this machine
(`ray.cluster_utils.Cluster`, one CPU each), a two-trial grid, each trial on its own node."""
import os

import pytest
import yaml

from recbole_genrec.tuning import run_tuning

from conftest import FIXTURES, ROOT

ray = pytest.importorskip("ray")


def agent_ports():
    """Free ports for one node's agents: two nodes on one machine otherwise may pick the same agent port, and the
    trial's runtime environment then fails to start ("the Ray agent couldn't be started due to the port
    conflict", seen once in a full suite run)."""
    from recbole_genrec.distributed import free_port

    return {"dashboard_agent_listen_port": free_port(), "metrics_agent_port": free_port(),
            "metrics_export_port": free_port()}


@pytest.fixture
def two_node_cluster(monkeypatch):
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # The nodes' workers import this checkout's package, as the driver does (not another installed copy).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            **agent_ports()})
    cluster.add_node(num_cpus=1, **agent_ports())
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_search_joins_a_two_node_cluster_and_spreads_its_trials(two_node_cluster, tiny, tmp_path, monkeypatch):
    # Relative paths on the driver: the trials (each in its own working directory, on another node) must get them
    # as absolute paths.
    monkeypatch.chdir(tmp_path)
    hyper = tmp_path / "SASRec.hyper"
    hyper.write_text("learning_rate choice [0.003, 0.00001]\n")
    overrides = tiny(data_path=os.path.relpath(FIXTURES), cache_dir="cache", epochs=1)
    del overrides["dataset"], overrides["checkpoint_dir"]

    result = run_tuning("SASRec", "tiny-beauty", str(hyper), config_dict=overrides, search="grid", trials=1,
                        ray_address=two_node_cluster.address, cpus_per_trial=1, scheduler="fifo",
                        tune_dir="search", verbose=0)

    assert [row["status"] for row in result.rows] == ["COMPLETED", "COMPLETED"]
    assert len({row["node"] for row in result.rows}) == 2  # one trial per node
    # The best configuration is the trial with the better validation score, tested once from its checkpoint.
    best_lr = max(result.rows, key=lambda row: row["valid_ndcg@10"])["learning_rate"]
    assert result.best_config == {"model": "SASRec", "dataset": "tiny-beauty", "learning_rate": best_lr}
    assert set(result.test_result) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    assert result.best_checkpoint.startswith(str(tmp_path / "search" / "checkpoints" / result.best["trial"]))
    with open(tmp_path / "search" / "best_config.yaml") as handle:
        assert yaml.safe_load(handle)["learning_rate"] == best_lr


def test_a_trial_can_itself_train_on_two_ddp_processes(two_node_cluster, tiny, tmp_path):
    """`--nproc=2` in a search (on GPUs: `--gpus_per_trial=2`): each trial is two DDP processes started by Ray
    Train's TorchTrainer, here one CPU each, so one on each node; they report one validation score per evaluation."""
    hyper = tmp_path / "SASRec.hyper"
    hyper.write_text("learning_rate choice [0.003]\n")
    overrides = tiny(cache_dir=str(tmp_path / "cache"), epochs=2, nproc=2)
    del overrides["dataset"], overrides["checkpoint_dir"]

    result = run_tuning("SASRec", "tiny-beauty", str(hyper), config_dict=overrides, search="grid", trials=1,
                        ray_address=two_node_cluster.address, cpus_per_trial=2, scheduler="fifo",
                        tune_dir=str(tmp_path / "search"), verbose=0)

    [row] = result.rows
    assert row["status"] == "COMPLETED" and row["evaluations"] == 2 and row["learning_rate"] == 0.003
    with open(tmp_path / "search" / "checkpoints" / row["trial"] / "summary.json") as handle:
        assert yaml.safe_load(handle)["processes"] == 2
    assert set(result.test_result) == {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
