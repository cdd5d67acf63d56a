"""Every `python run_recbole_genrec.py ...` command of the README's ```bash blocks runs with `--dry_run=True` on the
shipped data, up to and including its first training batch, so that a documented command that breaks fails CI
(issue 17). And what a dry run does and does not do, on the tiny fixture.

How each README command is run (the lists below are asserted against the README, so they stay true):
- as written plus `--dry_run=True`, with the caches and checkpoints in a temporary folder and RecBole's console
  log at WARNING (`--cache_dir`, `--checkpoint_dir`, `--state`: where files go and how much is printed, not what is
  computed), and a first training batch of 32 sequences (`--train_batch_size=32`: the shapes, the loss and its
  gradients are checked the same way at any batch size; a paper-size TIGER batch of 256 costs about 7 s of CPU, a
  LIGER quick-profile batch of 1024 about 6 s). Commands that differ only in `--dry_run` or `--results_file` (which a
  dry run never writes) run once.
- `--tune=...` commands: the dry run checks the hyper file, the options and the base configuration; no Ray.
- RQ-VAE tokenizers (TIGER's paper defaults fit 3000 epochs: minutes on a CPU) fit 0 epochs here, i.e. their codes
  are those of the k-means initialisation; every other setting is the command's. Codes after a few epochs would not
  do: an early epoch's codes collide (amazon-beauty, TIGER.yaml's fit: 2% of the items at the initialisation, 87%
  after one epoch, 16% after 20) and the collapse check would refuse them. `SHORT_FIT` lists those commands.
- Commands on data that is not shipped (`NOT_SHIPPED`) pass every check before the dataset lookup, which must fail
  naming the dataset.
Data: amazon-beauty and the MQL4GRec domains (amazon-instruments-mm, amazon-arts-mm, amazon-games-mm) ship in
dataset/ (with amazon-beauty's text embeddings); ml-100k is RecBole's bundled copy (recbole/dataset_example/ml-100k,
installed with recbole, so CI has it: asserted below). A command with --pretrain_datasets also dry-runs the first
batch of its pre-training stage."""
import glob
import os
import re
import shlex

import pytest

from recbole_genrec import cli
from recbole_genrec.config import RECBOLE_EXAMPLE_DIR
from recbole_genrec.tokenization.rqvae import RQVAETokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
COMMAND = "python run_recbole_genrec.py"
SHORT_FIT_EPOCHS = 0
DRY_RUN_BATCH = 32
NOT_SHIPPED = {
    "--model=SASRec --dataset=mydata --data_path=/data/atomic":
        ("your own atomic files, not shipped: the options and settings must pass, the data lookup must fail",
         "Dataset 'mydata' not found"),
    "--recommend=saved/TIGER-Dec-02-2026_04-00-00-3f2a9c1b.pth --users=1,2,3 --topk=10":
        ("a checkpoint of your own training run, not shipped: the lookup must fail naming it",
         "checkpoint saved/TIGER-Dec-02-2026_04-00-00-3f2a9c1b.pth not found"),
}
SHORT_FIT = {  # TIGER's paper defaults (model/TIGER.yaml's RQ-VAE, also under properties/beauty.yaml)
    "--model=TIGER,SASRec --dataset=amazon-beauty --results_file=results/beauty.csv",
    "--model=TIGER --dataset=ml-100k",
    "--model=TIGER --dataset=amazon-beauty --config_files=properties/beauty.yaml",
    "--model=TIGER --dataset=ml-100k --nproc=2 --gpu_id=0,1",
}
# Options that do not change what a dry run computes: commands equal up to them run once.
NOT_COMPUTED = ("--dry_run", "--results_file")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small batches: one thread is faster on a busy CPU


def readme_commands(text):
    """argv lists of the `python run_recbole_genrec.py` commands in ```bash blocks, continuation lines joined and
    trailing comments dropped, in README order, without repeats."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip()
            if line.startswith(COMMAND + " "):
                args = shlex.split(line, comments=True)[len(COMMAND.split()):]
                if args not in commands:
                    commands.append(args)
    return commands


def computed_part(args):
    return tuple(arg for arg in args if not arg.startswith(NOT_COMPUTED))


with open(README, encoding="utf-8") as handle:
    COMMANDS = readme_commands(handle.read())
DISTINCT = list({computed_part(args): args for args in reversed(COMMANDS)}.values())[::-1]


def test_readme_commands_are_found_and_the_lists_name_them():
    keys = {" ".join(args) for args in COMMANDS}
    assert len(COMMANDS) >= 10 and ["--model=TIGER"] in COMMANDS
    assert ["--model=TIGER", "--dataset=amazon-beauty", "--profile=quickstart"] in COMMANDS  # issue 17's command
    assert any(arg.startswith("--tune=") for args in COMMANDS for arg in args)
    assert set(NOT_SHIPPED) <= keys and SHORT_FIT <= keys  # no stale entry
    assert os.path.isfile(os.path.join(RECBOLE_EXAMPLE_DIR, "ml-100k", "ml-100k.inter")), \
        "ml-100k comes with recbole (dataset_example): the README's ml-100k commands need it"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for all commands (ml-100k's text is encoded once; TIGER's IDs are shared as in real runs)."""
    return tmp_path_factory.mktemp("readme-cache")


@pytest.fixture
def short_fits(monkeypatch):
    """RQ-VAE tokenizers fit SHORT_FIT_EPOCHS epochs; returns the (tokenizer, epochs asked) it shortened."""
    shortened, original = [], RQVAETokenizer.__init__

    def short(self, **params):
        original(self, **params)
        if int(self.params["epochs"]) > SHORT_FIT_EPOCHS:
            shortened.append((self.name, self.params["epochs"]))
            self.params["epochs"] = SHORT_FIT_EPOCHS

    monkeypatch.setattr(RQVAETokenizer, "__init__", short)
    return shortened


def _models(args):
    for arg in args:
        if arg.startswith("--model="):
            return arg.split("=", 1)[1].split(",")
    return ["TIGER"]


def _option(args, name):
    return next((arg.split("=", 1)[1] for arg in args if arg.startswith(f"--{name}=")), None)


@pytest.mark.parametrize("args", DISTINCT, ids=[" ".join(args) for args in DISTINCT])
def test_readme_command_dry_runs(args, shared_cache, short_fits, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the README's commands run from the checkout's root (properties/, hyper/)
    key = " ".join(args)
    results = _option(args, "results_file")
    results_before = os.path.getmtime(results) if results and os.path.exists(results) else None
    extra = ["--dry_run=True", f"--cache_dir={shared_cache}", f"--checkpoint_dir={tmp_path / 'saved'}", "--state=WARNING",
             f"--train_batch_size={DRY_RUN_BATCH}"]
    code = cli.main([arg for arg in args if not arg.startswith("--dry_run")] + extra)
    out, err = capsys.readouterr()
    if key in NOT_SHIPPED:
        reason, message = NOT_SHIPPED[key]
        assert code == 1 and message in err and "Unknown setting" not in err, (reason, err)
        return
    assert code == 0, err[-3000:]
    ready = [line for line in out.splitlines() if ": ready" in line]
    if _option(args, "tune"):
        assert ready and ready[0].startswith(f"{_models(args)[0]} on ") and "ready to tune" in ready[0]
    else:
        assert [line.split(" on ")[0] for line in ready] == _models(args), out[-3000:]
    assert bool(short_fits) == (key in SHORT_FIT), short_fits
    assert not os.path.exists(tmp_path / "saved") or not os.listdir(tmp_path / "saved")  # no checkpoint
    if results:  # no results file either
        assert (os.path.getmtime(results) if os.path.exists(results) else None) == results_before


# ---- what a dry run does, on the tiny fixture ---------------------------------------------------------------------
def tiny_args(tmp_path, cache, *more):
    return ["--dataset=tiny-beauty", f"--data_path={os.path.join(ROOT, 'tests', 'fixtures')}",
            "--load_col={'inter': ['user_id', 'item_id', 'timestamp']}",
            "--text_fields=['title', 'brand', 'categories', 'price']", f"--cache_dir={cache}",
            f"--checkpoint_dir={tmp_path / 'saved'}", "--state=WARNING", "--MAX_ITEM_LIST_LENGTH=10",
            "--sid_collapse=warn", "--train_batch_size=64", *more]


def test_dry_run_stops_after_one_batch_without_a_step(tmp_path, workdir, monkeypatch, capsys):
    """One forward and backward pass per model, no optimizer step, no checkpoint, no results, exit 0."""
    import torch

    steps, batches = [], []
    monkeypatch.setattr(torch.optim.Optimizer, "step", lambda *a, **k: steps.append(1))
    from recbole_genrec.model.tiger import TIGER

    original_loss = TIGER.calculate_loss
    monkeypatch.setattr(TIGER, "calculate_loss", lambda self, batch: batches.append(len(batch)) or
                        original_loss(self, batch))
    results = tmp_path / "rows.csv"
    code = cli.main(tiny_args(tmp_path, workdir / "cache", "--model=TIGER,SASRec", "--profile=quickstart",
                              "--dry_run=True", f"--results_file={results}"))
    out = capsys.readouterr().out
    assert code == 0
    lines = [line for line in out.splitlines() if ": ready" in line]
    assert len(lines) == 2 and lines[0].startswith("TIGER on tiny-beauty: ready (dry run: ")
    assert lines[1].startswith("SASRec on tiny-beauty: ready")
    assert "first training batch of" in lines[0] and "no step taken, nothing saved" in lines[0]
    assert len(batches) == 1 and steps == []  # one batch, no optimizer step
    assert not results.exists()
    assert not (tmp_path / "saved").exists() or not os.listdir(tmp_path / "saved")


def test_dry_run_reports_failures_and_checks_tuning_without_ray(tmp_path, workdir, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    cache = workdir / "cache"
    assert cli.main(tiny_args(tmp_path, cache, "--model=TIGER", "--dry_run=maybe")) == 1
    assert "--dry_run takes True or False" in capsys.readouterr().err
    hyper = tmp_path / "bad.hyper"
    hyper.write_text("learning_rate choice [0.01, 0.001]\nepoch choice [1, 2]\n")
    assert cli.main(tiny_args(tmp_path, cache, "--model=SASRec", f"--tune={hyper}", "--dry_run=True")) == 1
    assert "epoch (did you mean epochs?)" in capsys.readouterr().err
    hyper.write_text("learning_rate choice [0.01, 0.001]\n")
    assert cli.main(tiny_args(tmp_path, cache, "--model=SASRec", f"--tune={hyper}", "--trials=abc", "--dry_run=True")) == 1
    assert "--trials takes an integer" in capsys.readouterr().err
    assert cli.main(tiny_args(tmp_path, cache, "--model=SASRec", f"--tune={hyper}", "--dry_run=True")) == 0
    assert "SASRec on tiny-beauty: ready to tune (dry run: " in capsys.readouterr().out
    assert not glob.glob(os.path.join(ROOT, "ray_results", "SASRec-tiny-beauty-*"))  # no search directory
