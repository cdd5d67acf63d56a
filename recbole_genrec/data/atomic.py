"""Reading RecBole atomic files (tab-separated, header `name:type`) with errors that name the file, line and field.

RecBole itself reads them with pandas, which fills a short row or an empty value with NaN (a missing timestamp
becomes the column mean and silently reorders the leave-one-out split) and reports an empty file as "Some feat is
empty, please check the filtering settings". The plugin checks the files first.
"""
import csv
import os


def read_atomic(path):
    """-> (field names, iterator of (line number, row)). The header must be present; every non-blank row must
    have the header's number of columns."""
    handle = open(path, encoding="utf-8", newline="")
    reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if not header or not any(column.strip() for column in header):
        handle.close()
        raise ValueError(f"{path} is empty: expected a header of tab-separated `name:type` fields, e.g. "
                         f"'user_id:token\\titem_id:token\\ttimestamp:float', then one row per line.")
    names = [column.split(":")[0] for column in header]

    def rows():
        with handle:
            for line_number, row in enumerate(reader, start=2):
                if not row:
                    continue  # blank lines are skipped, as pandas does
                if len(row) != len(names):
                    raise ValueError(
                        f"Malformed line {line_number} in {path}: {len(row)} tab-separated columns, its header has "
                        f"{len(names)} ({', '.join(header)}). Fix or delete the line."
                    )
                yield line_number, row

    return names, rows()


def check_interactions(config):
    """Every interaction row has a value for each loaded field of `<dataset>.inter`, and there is at least one."""
    path = os.path.join(config["data_path"], f"{config['dataset']}.inter")
    names, rows = read_atomic(path)
    loaded = (config["load_col"] or {}).get("inter") or names
    columns = [(names.index(field), field) for field in loaded if field in names]
    count = 0
    for line_number, row in rows:
        for column, field in columns:
            if not row[column].strip():
                raise ValueError(f"Line {line_number} of {path} has no value for field '{field}': every interaction "
                                 f"needs one. Fix or delete the line.")
        count += 1
    if not count:
        raise ValueError(f"{path} has a header but no interactions: add rows below it.")
