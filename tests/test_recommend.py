"""recommend(): top-K unseen items from a saved checkpoint, for dataset users and raw histories, generative and
classic models, without retraining or rewriting a cache; and the command line's table and CSV."""
import csv
import os

import pytest

from recbole_genrec.cli import main
from recbole_genrec.quick_start import run_recbole_genrec
from recbole_genrec.recommend import recommend

from conftest import FIXTURES, TINY_TIGER

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INTER = os.path.join(FIXTURES, "tiny-beauty", "tiny-beauty.inter")


def _user_items():
    """{user token: [item tokens, file order]} read from the fixture's .inter file, independently of RecBole."""
    items = {}
    with open(INTER) as handle:
        next(handle)
        for line in handle:
            user, item, _ = line.rstrip("\n").split("\t")
            items.setdefault(user, []).append(item)
    return items


USER_ITEMS = _user_items()
ALL_ITEMS = {item for items in USER_ITEMS.values() for item in items}
USERS = list(USER_ITEMS)[:3]


@pytest.fixture(scope="module", params=["SASRec", "TIGER"])
def checkpoint(request, tiny):
    overrides = TINY_TIGER if request.param == "TIGER" else {}
    result = run_recbole_genrec(request.param, "tiny-beauty", config_dict=tiny(**overrides))
    return result["checkpoint"], tiny()["cache_dir"] if request.param == "TIGER" else None


def _cache_mtimes(cache_dir):
    return {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(cache_dir) for name in names}


def test_dataset_users_get_k_unseen_items_without_touching_caches(checkpoint):
    path, cache_dir = checkpoint
    before = _cache_mtimes(cache_dir) if cache_dir else {}
    assert before or not cache_dir  # TIGER's run filled the caches (text, semantic IDs) recommend() must only read
    recommendations = recommend(path, users=USERS, k=5)
    assert [r.user for r in recommendations] == USERS
    for recommendation in recommendations:
        assert len(recommendation.items) == len(set(recommendation.items)) == 5
        assert set(recommendation.items) <= ALL_ITEMS
        assert not set(recommendation.items) & set(USER_ITEMS[recommendation.user])  # seen items excluded
        assert len(recommendation.scores) == 5 and len(recommendation.titles) == 5
        assert all(isinstance(title, str) and title for title in recommendation.titles)
    assert (_cache_mtimes(cache_dir) if cache_dir else {}) == before


def test_raw_history_of_an_unseen_user(checkpoint):
    path, _ = checkpoint
    history = USER_ITEMS[USERS[0]][:4]
    [recommendation] = recommend(path, histories=[history], k=5)
    assert recommendation.user == "history 1"
    assert len(set(recommendation.items)) == 5 and set(recommendation.items) <= ALL_ITEMS
    assert not set(recommendation.items) & set(history)


def test_unknown_user_and_item_tokens_are_named(checkpoint):
    path, _ = checkpoint
    with pytest.raises(ValueError, match="Unknown user NOT-A-USER"):
        recommend(path, users=[USERS[0], "NOT-A-USER"])
    with pytest.raises(ValueError, match="History 2 has unknown item NOT-AN-ITEM"):
        recommend(path, histories=[USER_ITEMS[USERS[0]][:2], ["NOT-AN-ITEM", USER_ITEMS[USERS[0]][0]]])


def test_command_line_prints_the_table_and_writes_the_csv(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    output = tmp_path / "recs.csv"
    assert main([f"--recommend={path}", f"--users={','.join(USERS[:2])}", "--topk=3", f"--output={output}"]) == 0
    printed = capsys.readouterr().out
    assert USERS[0] in printed and "title" in printed
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["user"], row["rank"]) for row in rows] == [(u, str(r)) for u in USERS[:2] for r in (1, 2, 3)]
    assert all(row["item"] in ALL_ITEMS and row["item"] not in USER_ITEMS[row["user"]] for row in rows)
    assert main([f"--recommend={path}", "--users=NOT-A-USER"]) == 1
    assert "NOT-A-USER" in capsys.readouterr().err
