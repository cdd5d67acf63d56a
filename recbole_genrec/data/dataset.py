"""Dataset whose build() runs the model's tokenizer hook on the training split; atomic files read with quoting off."""
import contextlib
import csv

import numpy as np
import pandas as pd
from recbole.data.dataset import Dataset, SequentialDataset
from recbole.utils import FeatureSource, FeatureType, set_color

from recbole_genrec.data.atomic import FLOAT_TYPES, decoding_errors, first_bad_number, undecodable


def load_atomic_feat(self, filepath, source):
    """RecBole 1.2.1's `Dataset._load_feat` with three changes: the file is read with quoting off (the atomic format
    has none: a title such as `"Wally" the Flying Pig` is read verbatim, as the plugin's own readers in atomic.py
    read it, instead of stopping pandas with "'\\t' expected after '\"'" or losing the quotes of a wholly quoted
    value), a value that does not read (a non-numeric timestamp, bytes that are not UTF-8, ...) is reported with the
    file and line, and interaction rows identical to an earlier one in every column are counted in a warning, or
    dropped with `drop_identical_inter` (`identical_interactions`)."""
    self.logger.debug(set_color(f"Loading feature from [{filepath}] (source: [{source}]).", "green"))
    load_col, unload_col = self._get_load_and_unload_col(source)
    if load_col == set():
        return None

    field_separator = self.config["field_separator"]
    columns, usecols, dtype, unloaded = [], [], {}, {}
    encoding = self.config["encoding"]
    with open(filepath, "r", encoding=encoding) as f, decoding_errors(filepath):
        head = f.readline()[:-1]
    for field_type in head.split(field_separator):
        field, ftype = field_type.split(":")
        try:
            ftype = FeatureType(ftype)
        except ValueError:
            raise ValueError(f"Type {ftype} from field {field} is not supported (in the header of {filepath}).")
        if (load_col is not None and field not in load_col) or (unload_col is not None and field in unload_col):
            unloaded[field_type] = str  # read as text for the identical-row count of interactions only
            continue
        if isinstance(source, FeatureSource) or source != "link":
            self.field2source[field] = source
            self.field2type[field] = ftype
            if not ftype.value.endswith("seq"):
                self.field2seqlen[field] = 1
            if "float" in ftype.value:
                self.field2bucketnum[field] = 2
        columns.append(field)
        usecols.append(field_type)
        dtype[field_type] = np.float64 if ftype == FeatureType.FLOAT else str

    if len(columns) == 0:
        self.logger.warning(f"No columns has been loaded from [{source}]")
        return None

    seq_separator = self.config["seq_separator"]
    interactions = source == FeatureSource.INTERACTION
    try:
        # Interactions: every column, so that an identical row is one equal in all of them, loaded or not
        df = pd.read_csv(filepath, delimiter=field_separator, usecols=None if interactions else usecols,
                         dtype={**unloaded, **dtype} if interactions else dtype, encoding=encoding,
                         engine="python", quoting=csv.QUOTE_NONE)
    except ValueError as error:
        raise _read_error(filepath, columns, field_separator, seq_separator, error) from error
    if interactions:
        df = identical_interactions(self, df, filepath)[usecols]
    df.columns = columns

    for field in columns:
        ftype = self.field2type[field]
        if not ftype.value.endswith("seq"):
            continue
        df[field] = df[field].fillna(value="")
        if ftype == FeatureType.TOKEN_SEQ:
            df[field] = [np.array(list(filter(None, _.split(seq_separator)))) for _ in df[field].values]
        elif ftype == FeatureType.FLOAT_SEQ:
            try:
                df[field] = [np.array(list(map(float, filter(None, _.split(seq_separator)))))
                             for _ in df[field].values]
            except ValueError as error:
                raise _read_error(filepath, [field], field_separator, seq_separator, error) from error
        max_seq_len = max(map(len, df[field].values))
        if self.config["seq_len"] and field in self.config["seq_len"]:
            seq_len = self.config["seq_len"][field]
            df[field] = [seq[:seq_len] if len(seq) > seq_len else seq for seq in df[field].values]
            self.field2seqlen[field] = min(seq_len, max_seq_len)
        else:
            self.field2seqlen[field] = max_seq_len

    return df


def identical_interactions(dataset, df, filepath):
    """`df` (every column of an interaction file) without the rows identical to an earlier one when the run sets
    `drop_identical_inter`; otherwise unchanged, with a warning giving their count (each copy is one more
    interaction in training and evaluation)."""
    repeated = df.duplicated()
    count = int(repeated.sum())
    if not count:
        return df
    if dataset.config["drop_identical_inter"]:
        dataset.logger.info(f"Dropped {count:,} rows of [{filepath}] identical to an earlier row "
                            f"(drop_identical_inter).")
        return df[~repeated].reset_index(drop=True)
    dataset.logger.warning(
        f"{count:,} rows of [{filepath}] repeat an earlier row in every column: each copy counts as one more "
        f"interaction in training and evaluation. Set drop_identical_inter: True to drop them (RecBole's "
        f"rm_dup_inter instead drops every repeated user-item pair, also those at different times).")
    return df


def _read_error(filepath, fields, field_separator, seq_separator, error):
    """The line and field of the value pandas could not read, when a float field holds it, the line and byte of
    one that is not text in the file's encoding; else the file."""
    if isinstance(error, UnicodeDecodeError):
        return undecodable(filepath, error)
    try:
        located = first_bad_number(filepath, fields, field_separator, seq_separator, missing_ok=True)
    except ValueError as malformed:  # the plugin's reader names the line (e.g. a row with too many columns)
        located = malformed
    except OSError:
        located = None
    if located is not None:
        return located
    return ValueError(f"RecBole could not read {filepath}: {error}. The atomic format is one row per line, "
                      f"values separated by tabs, no quoting; float fields ({', '.join(FLOAT_TYPES)}) hold numbers.")


@contextlib.contextmanager
def atomic_reading():
    """RecBole's own dataset classes (RecBole models run through the plugin) read their atomic files as the plugin's
    dataset does, for the duration of the block."""
    original = Dataset._load_feat
    Dataset._load_feat = load_atomic_feat
    try:
        yield
    finally:
        Dataset._load_feat = original


class GenRecDataset(SequentialDataset):
    """A SequentialDataset that derives the items' semantic IDs after splitting.

    `build()` returns RecBole's train/valid/test splits; the model class's `build_semantic_ids(config, dataset,
    train_dataset)` hook then turns item content (and, for some methods, collaborative signals learned on the
    training split only) into semantic IDs. The splits are shallow copies, so the one table is shared by all.
    The IDs never enter the item features RecBole joins onto batches."""

    _load_feat = load_atomic_feat
    prefix_rows = None  # the prefix rows a reduced training split stands for (model's prepare_training_split)

    def build(self):
        from recbole_genrec import registry

        splits = super().build()
        self._resolve_tokenizer_params()
        model_class = registry.get_model(self.config["model"])
        semantic_ids = model_class.build_semantic_ids(self.config, self, splits[0])
        model_class.prepare_training_split(self.config, self, splits[0])
        for dataset in (self, *splits):
            dataset.semantic_ids = semantic_ids
        return splits

    def _resolve_tokenizer_params(self):
        """`tokenizer_params.codebook_size: auto` -> a number sized to this catalogue (tokenization/quality.py,
        `auto_codebook_size`), set in the config before the tokenizer is keyed, fitted and cached, so the cache key,
        the log and a checkpoint's config hold the size that was used."""
        from recbole_genrec.tokenization import resolve_tokenizer_params

        params = self.config["tokenizer_params"]
        resolved = resolve_tokenizer_params(self.config["tokenizer"], params, self.item_num - 1)
        if resolved is not params:
            self.config["tokenizer_params"] = resolved
            self.logger.info(f"tokenizer_params.codebook_size: auto -> {resolved['codebook_size']} for "
                             f"{self.item_num - 1:,} items")
