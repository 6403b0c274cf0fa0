"""A progress bar for long reads: tqdm's, when it is installed.

``Progress(total, desc)`` shows batches, rows/s, GB/s and the epoch;
without tqdm it warns once, saying how to get it, and does nothing.

May import: the standard library; tqdm when present.
"""

import time
import warnings

__all__ = ["Progress"]

_warned = False


class Progress:
    def __init__(self, total, desc, epoch):
        global _warned
        self._bar = None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            if not _warned:
                _warned = True
                warnings.warn("progress=True shows a bar with tqdm, which is not installed: pip install tqdm",
                              stacklevel=4)
            return
        self._bar = tqdm(total=total, desc=desc, unit="batch", dynamic_ncols=True)
        self._epoch = epoch
        self._t0 = time.perf_counter()
        self._rows = 0
        self._bytes = 0
        self._last = 0.0

    def update(self, rows, nbytes):
        if self._bar is None:
            return
        self._rows += rows
        self._bytes += nbytes
        self._bar.update(1)
        now = time.perf_counter()
        if now - self._last >= 0.5:
            self._last = now
            dt = max(now - self._t0, 1e-9)
            self._bar.set_postfix_str(f"epoch {self._epoch}, {self._rows / dt:,.0f} rows/s, "
                                      f"{self._bytes / dt / 1e9:.2f} GB/s", refresh=False)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
