"""Progress of long loops (training and evaluation batches, tokenizer epochs): a tqdm bar with rate and ETA on a
terminal; in a log file or a pipe, where a bar's carriage returns only make noise, a plain log line every
LOG_EVERY_SECONDS with the count, the rate and the ETA. A loop shorter than that logs nothing (RecBole's own epoch
lines already say how long it took)."""
import logging
import re
import sys
import time

from tqdm import tqdm

logger = logging.getLogger("recbole_genrec")

LOG_EVERY_SECONDS = 30.0
_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # RecBole's set_color codes in a description


def on_terminal():
    return sys.stderr.isatty()


def progress(iterable, total=None, desc="", **tqdm_options):
    """`iterable`, with its progress shown (tqdm's signature: RecBole's trainer calls it as it calls tqdm)."""
    if on_terminal():
        return tqdm(iterable, total=total, desc=desc, **tqdm_options)
    return LoggedProgress(iterable, total, desc)


class LoggedProgress:
    """Yields what `iterable` yields; logs `desc: done/total (percent), rate, ETA` every LOG_EVERY_SECONDS."""

    def __init__(self, iterable, total=None, desc=""):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc = _ANSI_COLOUR.sub("", desc).strip() or "progress"
        self.postfix = ""

    def __len__(self):
        return self.total

    def close(self):
        """tqdm's close: nothing to clear in a log."""

    def set_postfix(self, refresh=False, **values):
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def __iter__(self):
        start = last = time.monotonic()
        for done, item in enumerate(self.iterable, 1):
            yield item
            now = time.monotonic()
            if now - last >= LOG_EVERY_SECONDS:
                last = now
                logger.info(self.line(done, now - start))

    def line(self, done, elapsed):
        rate = done / elapsed if elapsed > 0 else float("inf")
        if self.total:
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            count = f"{done}/{self.total} ({100 * done / self.total:.0f}%), {rate:.2f} it/s, ETA {eta:.0f} s"
        else:
            count = f"{done}, {rate:.2f} it/s"
        return f"{self.desc}: {count}" + (f", {self.postfix}" if self.postfix else "")
