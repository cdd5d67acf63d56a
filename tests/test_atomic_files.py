"""Atomic files are read with quoting off (the format has none), by the plugin's readers and by RecBole's
`_load_feat` alike; a value of a float field that is not a number is reported with the file, line and field, bytes
that are not UTF-8 with the file, line and byte offset; a value longer than the csv module's default limit loads;
interaction rows identical to an earlier one are counted in a warning, or dropped with `drop_identical_inter`."""
import logging
import os
import re
import shutil

import pytest
from recbole.data.dataset import Dataset

from recbole_genrec.config import GenRecConfig
from recbole_genrec.data import create_dataset
from recbole_genrec.representation import read_item_text

from conftest import FIXTURES

# Amazon titles and brands as they come: a leading quoted word, a wholly quoted value, quotes inside and at the end
ITEMS = {
    "A": ('"Wally" the Flying Pig', '"Quoted Brand"', "1.5"),
    "B": ('"A wholly quoted title"', "Plain", "2"),
    "C": ('a "mid" quote and a trailing one"', 'O"Neil', "3"),
    "D": ("plain title", "Other", "4"),
}
# one model read by RecBole's own dataset class (through the plugin's create_dataset), one by GenRecDataset
MODELS = ["SASRec", "TIGER"]


def _write_dataset(folder, name="quoted", inter_rows=None, item_header=None, item_rows=None):
    (folder / name).mkdir(parents=True, exist_ok=True)
    inter_rows = inter_rows or [f"u{user}\t{item}\t{step}" for user in range(4) for step, item in enumerate("ABCD")]
    (folder / name / f"{name}.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(inter_rows) + "\n")
    item_header = item_header or "item_id:token\ttitle:token_seq\tbrand:token\tprice:float"
    item_rows = item_rows or ["\t".join((item, *values)) for item, values in ITEMS.items()]
    (folder / name / f"{name}.item").write_text(item_header + "\n" + "\n".join(item_rows) + "\n")
    return str(folder / name)


def _config(tiny, folder, model, name="quoted", item_fields=("item_id", "title", "brand", "price")):
    return GenRecConfig(model=model, dataset=name, config_dict=tiny(
        data_path=str(folder), dataset=name, text_fields=["title", "brand"],
        load_col={"inter": ["user_id", "item_id", "timestamp"], "item": list(item_fields)}))


@pytest.mark.parametrize("model", MODELS)
def test_quoted_titles_load_verbatim_in_recbole_and_in_the_plugin(tiny, tmp_path, model):
    original = Dataset._load_feat
    folder = _write_dataset(tmp_path)
    dataset = create_dataset(_config(tiny, tmp_path, model))  # was: "'\t' expected after '"'", naming no file
    assert Dataset._load_feat is original  # RecBole's class is left as it was
    tokens = dataset.field2id_token
    texts = read_item_text(os.path.join(folder, "quoted.item"), ["title", "brand"], tokens["item_id"])
    for item, (title, brand, price) in ITEMS.items():
        row = dataset.field2token_id["item_id"][item]
        words = [tokens["title"][word] for word in dataset.item_feat["title"][row].tolist() if word]
        assert " ".join(words) == title and tokens["brand"][int(dataset.item_feat["brand"][row])] == brand
        assert float(dataset.item_feat["price"][row]) == float(price)
        assert texts[row] == f"title: {title}; brand: {brand}"  # the text encoder reads the same values


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("value", ["abc", "NA", "nan"])
def test_a_timestamp_that_is_not_a_number_names_file_line_and_field(tiny, tmp_path, model, value):
    rows = ["u0\tA\t1", "u0\tB\t2", f"u0\tC\t{value}", "u1\tA\t1"]
    folder = _write_dataset(tmp_path, inter_rows=rows)
    path = os.path.join(folder, "quoted.inter")
    with pytest.raises(ValueError, match=rf"Line 4 of {re.escape(path)}: field 'timestamp' \(float\) has the value "
                                         rf"'{value}', not a number"):
        create_dataset(_config(tiny, tmp_path, model))


@pytest.mark.parametrize("model", MODELS)
def test_an_item_float_that_is_not_a_number_names_file_line_and_field(tiny, tmp_path, model):
    rows = ["A\tfirst\tB1\t1.5", "", "B\tsecond\tB2\t12,5", "C\tthird\tB3\tNA", "D\tfourth\tB4\t4"]
    folder = _write_dataset(tmp_path, item_rows=rows)  # line 3 is blank: the line number is the file's
    path = os.path.join(folder, "quoted.item")
    with pytest.raises(ValueError, match=rf"Line 4 of {re.escape(path)}: field 'price' \(float\) has the value "
                                         r"'12,5', not a number"):
        create_dataset(_config(tiny, tmp_path, model))


def test_a_float_sequence_element_that_is_not_a_number_is_named(tiny, tmp_path):
    header = "item_id:token\ttitle:token_seq\tbrand:token\tprice:float\tweights:float_seq"
    rows = ["A\tfirst\tB1\t1\t0.5 1", "B\tsecond\tB2\t2\t0.5 x", "C\tthird\tB3\t3\t", "D\tfourth\tB4\t4\t2"]
    folder = _write_dataset(tmp_path, item_header=header, item_rows=rows)
    path = os.path.join(folder, "quoted.item")
    with pytest.raises(ValueError, match=rf"Line 3 of {re.escape(path)}: field 'weights' \(float_seq\) has the "
                                         r"value '0.5 x', the element 'x' is not a number"):
        create_dataset(_config(tiny, tmp_path, "SASRec", item_fields=("item_id", "weights")))


def _not_utf8(tmp_path):
    """The fixture's .item file with a Latin-1 byte in row B (line 3): (its path, the byte's offset in the file)."""
    folder = _write_dataset(tmp_path)
    path = os.path.join(folder, "quoted.item")
    with open(path, "rb") as handle:
        data = handle.read().replace(b"\tPlain\t", b"\tPl\xe9in\t")
    with open(path, "wb") as handle:
        handle.write(data)
    return path, data.index(b"\xe9")


@pytest.mark.parametrize("reader", ["SASRec", "TIGER", "config", "text"])
def test_an_item_file_that_is_not_utf8_names_file_line_and_byte(tiny, tmp_path, reader):
    path, offset = _not_utf8(tmp_path)
    message = rf"^Line 3 of {re.escape(path)}: byte 0xe9 at byte offset {offset} is not valid utf-8"
    with pytest.raises(ValueError, match=message):
        if reader == "config":  # no text_fields: the config picks them from the file's header
            GenRecConfig(model="TIGER", dataset="quoted",
                         config_dict=tiny(data_path=str(tmp_path), dataset="quoted", text_fields=None))
        elif reader == "text":  # the plugin's own reader (the text encoder's input)
            read_item_text(path, ["title", "brand"], ["[PAD]", *ITEMS])
        else:  # RecBole's dataset class and GenRecDataset, through pandas
            create_dataset(_config(tiny, tmp_path, reader))


@pytest.mark.parametrize("model", MODELS)
def test_a_value_longer_than_the_csv_field_limit_loads(tiny, tmp_path, model):
    title = "long " * 40_000  # 200,000 characters: the csv module's default limit is 131,072
    rows = [f"A\t{title}\tBrand\t1", "B\tshort\tBrand\t2", "C\tthird\tB3\t3", "D\tfourth\tB4\t4"]
    folder = _write_dataset(tmp_path, item_rows=rows)
    dataset = create_dataset(_config(tiny, tmp_path, model))
    row = dataset.field2token_id["item_id"]["A"]
    assert len([word for word in dataset.item_feat["title"][row].tolist() if word]) == 40_000
    texts = read_item_text(os.path.join(folder, "quoted.item"), ["title"], dataset.field2id_token["item_id"])
    assert texts[row] == f"title: {title.strip()}"


def _with_identical_rows(tmp_path, name="tiny-dup"):
    """A copy of the tiny-beauty fixture whose .inter file repeats 7 of its rows (one of them twice) and adds one
    interaction of a user-item pair it has at another time: (the .inter path, the rows it adds)."""
    source = os.path.join(FIXTURES, "tiny-beauty", "tiny-beauty")
    (tmp_path / name).mkdir()
    with open(source + ".inter") as handle:
        header, *rows = handle.read().splitlines()
    user, item, _ = rows[0].split("\t")
    extra = [rows[3], rows[10], rows[10], rows[20], rows[100], rows[500], rows[-1], f"{user}\t{item}\t99999"]
    path = tmp_path / name / f"{name}.inter"
    path.write_text("\n".join([header, *rows[:50], *extra, *rows[50:]]) + "\n")
    shutil.copy(source + ".item", tmp_path / name / f"{name}.item")
    return str(path), len(extra)


@pytest.mark.parametrize("model", MODELS)
def test_identical_interaction_rows_warn_with_their_count_or_are_dropped(tiny, tmp_path, model, caplog):
    fixture = create_dataset(GenRecConfig(model=model, dataset="tiny-beauty", config_dict=tiny()))
    path, added = _with_identical_rows(tmp_path)

    def dataset(**overrides):
        return create_dataset(GenRecConfig(model=model, dataset="tiny-dup", config_dict=tiny(
            data_path=str(tmp_path), dataset="tiny-dup", **overrides)))

    with caplog.at_level(logging.WARNING):
        kept = dataset()
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"7 rows of [{path}] repeat an earlier row in every column")
    assert "drop_identical_inter: True" in warnings[0]
    assert len(kept.inter_feat) == len(fixture.inter_feat) + added

    caplog.clear()
    dropped = dataset(drop_identical_inter=True)  # the other user-item pair at another time stays
    assert len(dropped.inter_feat) == len(fixture.inter_feat) + 1
    assert not [record for record in caplog.records if record.levelno == logging.WARNING]
