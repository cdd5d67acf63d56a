"""The search-space language: RecBole's hyper file format (`hyper/README.md`), read into `HyperParam`s, checked
against a model's configuration, and merged into trials' config overrides. Ray orchestration: tuning.py."""
import ast
import copy
import logging
import math
import re
from dataclasses import dataclass

logger = logging.getLogger("recbole_genrec")

HYPER_KINDS = ("choice", "uniform", "quniform", "loguniform")


@dataclass(frozen=True)
class HyperParam:
    """One line of a hyper file: `name kind values`.

    choice [v1, v2, ...]      one of the listed Python literals
    uniform low,high          a float in [low, high]
    quniform low,high,q       round(uniform(low, high) / q) * q; an int when low, high and q are whole numbers
    loguniform low,high       exp(uniform(low, high)): as in RecBole (hyperopt), the bounds are natural-log exponents
    """

    name: str
    kind: str
    values: tuple
    line: int = 0  # in the hyper file, for messages

    @property
    def integral(self):
        """A quniform over whole numbers: the search draws ints."""
        return self.kind == "quniform" and all(float(v).is_integer() for v in self.values)

    def drawn_values(self):
        """Values of every type the search may give the option: each choice; a range's bounds as drawn (ints for
        an integral quniform, floats otherwise)."""
        if self.kind == "choice":
            return list(self.values)
        if self.integral:
            return [int(v) for v in self.values[:2]]
        return list(self.extremes())

    def domain(self, grid=False):
        """The Ray Tune search domain (`grid=True`: every choice becomes a grid axis)."""
        from ray import tune

        if self.kind == "choice":
            return tune.grid_search(list(self.values)) if grid else tune.choice(list(self.values))
        if self.kind == "uniform":
            return tune.uniform(*self.values)
        if self.kind == "quniform":
            return tune.qrandint(*(int(v) for v in self.values)) if self.integral else tune.quniform(*self.values)
        return tune.loguniform(math.exp(self.values[0]), math.exp(self.values[1]))

    def extremes(self):
        """(smallest, largest) value this parameter can take, for numeric parameters."""
        if self.kind == "choice":
            return min(self.values), max(self.values)
        if self.kind == "loguniform":
            return math.exp(self.values[0]), math.exp(self.values[1])
        return self.values[0], self.values[1]


def parse_hyper_file(path):
    """Read a RecBole hyper file into {name: HyperParam} (file order). Blank lines and lines starting with `#`
    are skipped. Numeric bounds may be separated by commas (RecBole's spelling) or spaces."""
    params = {}
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{number}"
            parts = line.split(None, 2)
            if len(parts) < 3:
                raise ValueError(f"{where}: expected `name kind values`, got {line!r}")
            name, kind, text = parts
            if kind not in HYPER_KINDS:
                raise ValueError(f"{where}: unknown kind {kind!r} for {name}; use one of {', '.join(HYPER_KINDS)}")
            if name in params:
                raise ValueError(f"{where}: {name} is defined twice")
            params[name] = HyperParam(name, kind, _parse_values(kind, text, where), number)
    if not params:
        raise ValueError(f"{path}: no hyper-parameters found")
    return params


def _parse_values(kind, text, where):
    if kind == "choice":
        try:
            values = ast.literal_eval(text)
        except (ValueError, SyntaxError) as error:
            raise ValueError(f"{where}: choice values must be a Python list literal, got {text!r}") from error
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{where}: choice needs a non-empty list, got {text!r}")
        return tuple(values)
    try:
        numbers = tuple(float(v) for v in re.split(r"[,\s]+", text.strip()) if v)
    except ValueError as error:
        raise ValueError(f"{where}: {kind} needs numbers, got {text!r}") from error
    expected = 3 if kind == "quniform" else 2
    if len(numbers) != expected:
        raise ValueError(f"{where}: {kind} needs {expected} numbers, got {text!r}")
    if numbers[0] >= numbers[1]:
        raise ValueError(f"{where}: {kind} needs low < high, got {text!r}")
    if kind == "quniform" and numbers[2] <= 0:
        raise ValueError(f"{where}: quniform needs q > 0, got {text!r}")
    return numbers


def merge_params(sampled, base_dicts):
    """Turn sampled values into config overrides: `tokenizer_params.codebook_size: 128` is merged into a copy of
    the model's default `tokenizer_params` dict (RecBole replaces dict-valued keys as a whole)."""
    overrides = {}
    for name, value in sampled.items():
        if "." not in name:
            overrides[name] = value
            continue
        top, *path = name.split(".")
        if top not in overrides:
            overrides[top] = copy.deepcopy(base_dicts.get(top) or {})
        node = overrides[top]
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return overrides


def plain_python(value):
    """numpy scalars and tuples -> plain Python values (for yaml, CSV and RecBole)."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain_python(v) for v in value]
    if isinstance(value, dict):
        return {k: plain_python(v) for k, v in value.items()}
    return value


def check_space(space, base, hyper_file):
    """Before Ray starts: every value the search may give an option has the option's type (as a config value
    must: config.check_value_types), and a dotted name tunes a key of a dict-valued setting. Returns {setting: the
    base config's dict} for the dotted names (`merge_params`)."""
    from recbole_genrec.config import check_value_types

    base_dicts = {}
    for name, param in space.items():
        try:  # a wrong type would fail every trial once Ray has started
            for value in param.drawn_values():
                check_value_types({name: value}, defaults=base.final_config_dict)
        except ValueError as error:
            raise ValueError(f"{hyper_file}:{param.line}: {name} {param.kind}: {error}") from None
        if name.split(".")[0] not in base.final_config_dict:
            logger.warning(f"{hyper_file}: {name} is not a parameter of {base['model']}'s configuration (typo?); "
                           f"it is passed on as given.")
        if "." in name:
            top = name.split(".")[0]
            if base[top] is not None and not isinstance(base[top], dict):
                raise ValueError(f"{hyper_file}: {name} tunes a key of {top!r}, which is not a dict in "
                                 f"{base['model']}'s config ({base[top]!r})")
            base_dicts[top] = plain_python(base[top] or {})
    return base_dicts
