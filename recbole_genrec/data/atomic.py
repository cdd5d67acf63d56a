"""Reading RecBole atomic files (tab-separated, header `name:type`) with errors that name the file, line and field.

RecBole itself reads them with pandas, which fills a short row or an empty value with NaN (a missing timestamp
becomes the column mean and silently reorders the leave-one-out split) and reports an empty file as "Some feat is
empty, please check the filtering settings". The plugin checks the files first.

The atomic format has no quoting: a value is everything between two tabs, quotes included. Every reader here and
the plugin's `Dataset._load_feat` (data/dataset.py) read with quoting off, so they see the same values (pandas'
default quoting stops at an Amazon title such as `"Wally" the Flying Pig` and strips the quotes of a wholly quoted
one).
"""
import contextlib
import csv
import math
import os
import sys

# The strings pandas reads as a missing value (RecBole then fills a float field with its column mean).
PANDAS_MISSING = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
                  "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
FLOAT_TYPES = ("float", "float_seq")
# A value may be long (a product description of 200,000 characters); the csv module's default limit (131,072),
# which pandas' python engine shares, would stop the read with "_csv.Error: field larger than field limit". The
# limit is a C long: 32 bits on Windows.
csv.field_size_limit(min(sys.maxsize, 2 ** 31 - 1))


def read_atomic(path, delimiter="\t"):
    """-> (field names, iterator of (line number, row)). The header must be present; every non-blank row must
    have the header's number of columns."""
    names, _, rows = read_atomic_typed(path, delimiter)
    return names, rows


def read_atomic_typed(path, delimiter="\t"):
    """-> (field names, field types, iterator of (line number, row)); see `read_atomic`."""
    handle = open(path, encoding="utf-8", newline="")
    reader = csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    with decoding_errors(path):
        header = next(reader, None)
    if not header or not any(column.strip() for column in header):
        handle.close()
        raise ValueError(f"{path} is empty: expected a header of tab-separated `name:type` fields, e.g. "
                         f"'user_id:token\\titem_id:token\\ttimestamp:float', then one row per line.")
    names = [column.split(":")[0] for column in header]
    types = [column.split(":")[1].strip() if ":" in column else "" for column in header]

    def rows():
        with handle, decoding_errors(path):
            for line_number, row in enumerate(reader, start=2):
                if not row:
                    continue  # blank lines are skipped, as pandas does
                if len(row) != len(names):
                    raise ValueError(
                        f"Malformed line {line_number} in {path}: {len(row)} tab-separated columns, its header has "
                        f"{len(names)} ({', '.join(header)}). Fix or delete the line."
                    )
                yield line_number, row

    return names, types, rows()


@contextlib.contextmanager
def decoding_errors(path):
    """A UnicodeDecodeError while reading `path` in the block becomes `undecodable`'s ValueError."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise undecodable(path, error) from None


def undecodable(path, error):
    """`error`, a UnicodeDecodeError of reading `path`, as a ValueError naming the file, the line and the byte
    offset (the decoder's own position counts from the chunk it was given, not from the file's start)."""
    offset = 0
    with open(path, "rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                line.decode(error.encoding)
            except UnicodeDecodeError as bad:
                return ValueError(
                    f"Line {line_number} of {path}: byte 0x{line[bad.start]:02x} at byte offset {offset + bad.start} "
                    f"is not valid {error.encoding} ({bad.reason}). Save the file as UTF-8 (e.g. iconv -f latin1 "
                    f"-t utf-8).")
            offset += len(line)
    return ValueError(f"{path} is not valid {error.encoding} ({error.reason}). Save the file as UTF-8.")


def number_problem(value, field_type, seq_separator=" ", missing_ok=True):
    """None if `value` of a float / float_seq field is what RecBole reads as numbers, else why not. `missing_ok`:
    an empty or NA value (NaN once read) is accepted."""
    stripped = value.strip()
    if field_type == "float_seq":
        for part in filter(None, value.split(seq_separator)):
            if _float(part) is None:
                return f"the element {part!r} is not a number"
        return None
    if missing_ok and stripped in PANDAS_MISSING:
        return None
    number = _float(stripped)
    if number is None or (not missing_ok and math.isnan(number)):
        return "not a number"
    return None


def _float(text):
    try:
        return float(text)
    except ValueError:
        return None


def first_bad_number(path, fields=None, delimiter="\t", seq_separator=" ", missing_ok=True):
    """The first value of a float / float_seq field (of `fields`, default all) that is not a number, as
    `ValueError` naming the file, the line and the field; None when every value reads."""
    names, types, rows = read_atomic_typed(path, delimiter)
    columns = [(column, name, types[column]) for column, name in enumerate(names)
               if types[column] in FLOAT_TYPES and (fields is None or name in fields)]
    if columns:
        for line_number, row in rows:
            for column, name, field_type in columns:
                problem = number_problem(row[column], field_type, seq_separator, missing_ok)
                if problem:
                    return number_error(path, line_number, name, field_type, row[column], problem)
    return None


def number_error(path, line_number, field, field_type, value, problem):
    return ValueError(f"Line {line_number} of {path}: field '{field}' ({field_type}) has the value {value!r}, "
                      f"{problem}. Fix or delete the line.")


def check_interactions(config):
    """Every interaction row has a value for each loaded field of `<dataset>.inter` (a number for float fields),
    and there is at least one."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    names, types, rows = read_atomic_typed(path, config["field_separator"] or "\t")
    loaded = (config["load_col"] or {}).get("inter") or names
    columns = [(names.index(field), field, types[names.index(field)]) for field in loaded if field in names]
    numbers = [(column, field, field_type) for column, field, field_type in columns if field_type in FLOAT_TYPES]
    seq_separator = config["seq_separator"] or " "
    count = 0
    for line_number, row in rows:
        for column, field, _ in columns:
            if not row[column].strip():
                raise ValueError(f"Line {line_number} of {path} has no value for field '{field}': every interaction "
                                 f"needs one. Fix or delete the line.")
        for column, field, field_type in numbers:
            problem = number_problem(row[column], field_type, seq_separator, missing_ok=False)
            if problem:
                raise number_error(path, line_number, field, field_type, row[column], problem)
        count += 1
    if not count:
        raise ValueError(f"{path} has a header but no interactions: add rows below it.")
