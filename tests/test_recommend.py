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


def test_tokens_and_titles_are_plain_strings(checkpoint):
    """Every user by default (the dataset's numpy tokens) and a raw history: the API and its repr show plain `str`
    tokens and titles, never numpy's `np.str_('...')`."""
    path, _ = checkpoint
    recommendations = recommend(path, histories=[USER_ITEMS[USERS[0]][:2]], k=2)
    recommendations += recommend(path, k=2)  # every user, from the dataset's own token array
    assert len(recommendations) == len(USER_ITEMS) + 1
    for recommendation in recommendations:
        values = [recommendation.user, *recommendation.items, *recommendation.titles]
        assert all(type(value) is str for value in values) and all(type(s) is float for s in recommendation.scores)
    assert "np.str_" not in repr(recommendations) and "np.float" not in repr(recommendations)


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


def test_a_model_that_scores_user_ids_ranks_dataset_users_only(tiny):
    """BPR (RecBole's, non-sequential): dataset users through full_sort_predict; a raw history cannot be scored."""
    path = run_recbole_genrec("BPR", "tiny-beauty", config_dict=tiny(embedding_size=16))["checkpoint"]
    [recommendation] = recommend(path, users=USERS[:1], k=5)
    assert len(set(recommendation.items)) == 5 and not set(recommendation.items) & set(USER_ITEMS[USERS[0]])
    assert recommendation.scores == sorted(recommendation.scores, reverse=True)
    with pytest.raises(ValueError, match="BPR scores users by their id"):
        recommend(path, histories=[USER_ITEMS[USERS[0]][:2]])


def test_a_generator_decodes_again_wider_until_k_unseen_items_come_out():
    """Rows whose seen items fill the beam are decoded again at twice the width (powers of two, from the trained
    beam), the others not: a generator that ranks items 1, 2, 3, ... and a user who has items 1-12."""
    from types import SimpleNamespace

    import torch

    from recbole_genrec.recommend import Recommender

    widths = []

    class RanksInOrder:
        ITEM_SEQ, ITEM_SEQ_LEN = "item_id_list", "item_length"

        def generate_topk(self, interaction, width):
            widths.append((len(interaction), width))
            items = torch.arange(1, width + 1).repeat(len(interaction), 1)
            return items, -items.float()

    recommender = Recommender.__new__(Recommender)
    recommender.__dict__.update(
        dataset=SimpleNamespace(uid_field="user_id", iid_field="item_id", field2seqlen={"item_id_list": 20},
                                item_num=101),
        config={"device": torch.device("cpu"), "LIST_SUFFIX": "_list"}, sequential=True, generative=True,
        n_items=100, beam_key="beam_size", trained_width=4, model=lambda width: RanksInOrder())
    heavy, light = ("heavy", 1, list(range(1, 13))), ("light", 2, [50])
    (heavy_items, heavy_scores), (light_items, _) = recommender._rank_unseen([heavy, light], k=5, exclude_seen=True)
    assert heavy_items.tolist() == [13, 14, 15, 16, 17] and heavy_scores.tolist() == [-13, -14, -15, -16, -17]
    assert light_items.tolist() == [1, 2, 3, 4, 5]
    assert widths == [(2, 8), (1, 16), (1, 32)]  # only the heavy user is decoded again


def test_seen_items_are_found_by_lookup_as_the_catalogue_mask_finds_them():
    """A generator's decoded lists lose the user's seen items by a lookup among the (user, item) pairs: the same
    drops as a [B, item_num] mask of seen items gathered at the decoded items."""
    import torch

    from recbole_genrec.recommend import seen_items

    generator = torch.Generator().manual_seed(0)
    item_num = 200
    chunk = [("a", 1, [5, 9, 9, 120]), ("b", 2, []), ("c", 0, list(range(1, 60))), ("d", 3, [199])]
    items = torch.randint(1, item_num, (len(chunk), 40), generator=generator)
    items[:, -3:] = -1
    items[0, :4] = torch.tensor([120, 9, 5, 6])
    items[3, 0] = 199
    mask = torch.zeros(len(chunk), item_num, dtype=torch.bool)
    for row, (_, _, seen) in enumerate(chunk):
        mask[row, seen] = True
    expected = mask.gather(1, items.clamp(min=0)) & (items >= 0)
    assert torch.equal(seen_items(chunk, items, item_num), expected)
    assert expected[0, :3].all() and not expected[0, 3] and expected[3, 0] and not expected[1].any()
    assert not seen_items([("b", 2, [])], items[:1], item_num).any()
