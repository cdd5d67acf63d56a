"""Reading results (recbole_genrec/results.py): a results CSV drawn again as the two-panel plot, with the papers'
figures where they exist."""
import pytest

from recbole_genrec.results import _plot_k, main, paper_figures, write_csv

ROWS = [
    {"model": "SASRec", "dataset": "amazon-beauty", "test_recall@5": 0.05, "test_recall@10": 0.08,
     "test_ndcg@5": 0.03, "test_ndcg@10": 0.04, "train_seconds": 120.0, "test_eval_seconds": 2.0, "test_users": 2000},
    {"model": "TIGER", "dataset": "amazon-beauty", "test_recall@5": 0.04, "test_recall@10": 0.06,
     "test_ndcg@5": 0.03, "test_ndcg@10": 0.033, "train_seconds": 3600.0, "test_eval_seconds": 20.0,
     "test_users": 2000},
]


def test_csv_is_printed_and_drawn_again(tmp_path, capsys):
    csv_path = tmp_path / "results.csv"
    write_csv(ROWS, csv_path)
    assert main([str(csv_path)]) == 0
    printed = capsys.readouterr().out
    assert "TIGER" in printed and "test_recall@10" in printed
    assert (tmp_path / "results.png").stat().st_size > 10_000  # three panels of bars
    assert ("TIGER", "amazon-beauty") in paper_figures()  # its figure is marked on that plot
    assert main(["results.txt"]) == 2


@pytest.mark.parametrize("keys, k", [(("test_recall@5", "test_recall@10"), 10), (("test_recall@5",), 5)])
def test_plotted_k_is_10_when_every_row_has_it(keys, k):
    assert _plot_k([{key: 0.1 for key in keys}, {"test_recall@5": 0.1, "test_recall@10": 0.1}]) == k
