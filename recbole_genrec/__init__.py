"""recbole_genrec: generative recommenders with semantic IDs, as a RecBole plugin."""
from recbole_genrec import compat

compat.apply()

__version__ = "0.1.0"
