"""The few shims RecBole 1.2.1 needs on today's numpy, scipy and torch.

`apply()` is idempotent and runs when the package is imported, before any RecBole module is loaded; Ray workers
call it again through `worker_setup` (they start fresh interpreters). It also installs the safety rails around
RecBole's inputs (recbole_genrec/safety.py).
"""
import logging

import numpy as np
import torch

from recbole_genrec import safety

# numpy >= 2 removed these aliases; RecBole's Config and ray 2.6.3 still use them.
_NUMPY_ALIASES = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool8": np.bool_,
    "int_": np.int64,
    "object_": np.object_,
    "str_": np.str_,
}


# The older aliases RecBole's metrics still use (NDCG calls np.float): RecBole sets them only inside
# Config.compatibility_settings(), so code that loads a checkpoint without building a Config would crash.
_LEGACY_NUMPY_ALIASES = {"bool": np.bool_, "int": np.int64, "float": np.float64, "complex": np.complex128,
                         "object": np.object_, "str": np.str_, "long": np.int64, "unicode": np.str_}


def apply():
    # faiss logs each CPU-feature build it tries and misses (avx512, avx2) at INFO under RecBole's INFO logging.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    for name, value in {**_NUMPY_ALIASES, **_LEGACY_NUMPY_ALIASES}.items():
        if name not in vars(np):  # hasattr would trigger numpy's FutureWarnings for the removed names
            setattr(np, name, value)
    disable_recbole_anomaly_detection()
    restore_dok_update()
    safety.apply()


def restore_dok_update():
    """RecBole's graph models (LightGCN, NGCF, ...) fill their adjacency with `dok_matrix._update(dict)`, a private
    method scipy >= 1.13 dropped; the public `update` refuses direct writes. The same effect, through `_dict`."""
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):
        def _update(self, data):
            self._dict.update(data)

        sp.dok_matrix._update = _update


def disable_recbole_anomaly_detection():
    """`recbole.model.sequential_recommender.sine` switches on autograd anomaly detection for the whole process
    when imported (which RecBole's model lookup does): backward gets 1.35-2x slower. Import it first, then switch
    it off, so a later import cannot switch it on again."""
    import recbole.model.sequential_recommender  # noqa: F401  (runs sine.py's global side effect now)

    torch.autograd.set_detect_anomaly(False)


def worker_setup():
    """Entry point for Ray's `worker_process_setup_hook`."""
    apply()
