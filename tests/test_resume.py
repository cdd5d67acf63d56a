"""A run stopped after an epoch continues from its resume file and ends exactly as an uninterrupted run
(recbole_genrec/trainer.py: `resume_file`)."""
import pytest

from recbole_genrec.quick_start import run_recbole_genrec
from recbole_genrec.trainer import GenRecTrainer

from conftest import TINY_TIGER

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Killed(Exception):
    """Stands for the process being killed (a machine taken back, Ctrl-C) once epoch 1's state is on disk."""


def _settings(tiny, model, resume_file):
    extra = TINY_TIGER if model == "TIGER" else {}
    return tiny(**extra, epochs=3, eval_step=1, stopping_step=5, resume_file=str(resume_file), show_progress=False)


@pytest.mark.parametrize("model", ["SASRec", "TIGER"])
def test_resumed_run_equals_a_straight_run(tiny, tmp_path, monkeypatch, model):
    straight = run_recbole_genrec(model, "tiny-beauty", config_dict=_settings(tiny, model, tmp_path / "straight.pth"))

    save = GenRecTrainer._save_training_state

    def killed_after_epoch_1(self, next_epoch, finished=False):
        save(self, next_epoch, finished)
        if next_epoch == 2 and not finished:
            raise Killed()

    resume_file = tmp_path / "resume.pth"
    monkeypatch.setattr(GenRecTrainer, "_save_training_state", killed_after_epoch_1)
    with pytest.raises(Killed):
        run_recbole_genrec(model, "tiny-beauty", config_dict=_settings(tiny, model, resume_file))
    monkeypatch.undo()
    resumed = run_recbole_genrec(model, "tiny-beauty", config_dict=_settings(tiny, model, resume_file))

    assert resumed["epochs"] == straight["epochs"] == 3
    assert resumed["best_valid_score"] == straight["best_valid_score"]
    assert resumed["best_valid_result"] == straight["best_valid_result"]
    assert resumed["test_result"] == straight["test_result"]

    # A run whose training had finished (it died during the test) only tests, from the same best checkpoint.
    again = run_recbole_genrec(model, "tiny-beauty", config_dict=_settings(tiny, model, resume_file))
    assert again["test_result"] == straight["test_result"] and again["checkpoint"] == resumed["checkpoint"]


def test_time_budget_pauses_a_resumable_run_and_the_same_call_trains_on(tiny, tmp_path):
    """With a resume_file the budget is a pause: no test, and each call (the budget may differ) adds epochs until
    the run ends as an uninterrupted one."""
    straight = run_recbole_genrec("TIGER", "tiny-beauty", config_dict=_settings(tiny, "TIGER", tmp_path / "s.pth"))
    paused = {**_settings(tiny, "TIGER", tmp_path / "resume.pth"), "train_time_budget": 0}
    calls = []
    while not calls or calls[-1]["paused"]:
        calls.append(run_recbole_genrec("TIGER", "tiny-beauty", config_dict=paused))
        assert len(calls) <= 3
    assert [call["paused"] for call in calls] == [True, True, False]
    assert [call["epochs"] for call in calls] == [1, 2, 3]
    assert calls[0]["test_result"] is None and calls[1]["test_result"] is None
    assert calls[-1]["best_valid_result"] == straight["best_valid_result"]
    assert calls[-1]["test_result"] == straight["test_result"]


def test_resume_file_of_other_settings_is_refused(tiny, tmp_path):
    resume_file = tmp_path / "resume.pth"
    run_recbole_genrec("SASRec", "tiny-beauty", config_dict={**_settings(tiny, "SASRec", resume_file), "epochs": 1})
    with pytest.raises(ValueError, match=rf"resume_file {resume_file} holds the state of a run with other settings"):
        run_recbole_genrec("SASRec", "tiny-beauty",
                           config_dict={**_settings(tiny, "SASRec", resume_file), "epochs": 1, "learning_rate": 0.01})
