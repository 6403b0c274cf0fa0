"""multitables' ``RequestPool``: futures in insertion order, handed from
producer threads to a consumer. It knows nothing of what a future holds.

May import: the standard library only.
"""

import collections
import threading

__all__ = ["RequestPool"]


class RequestPool:
    """Futures in insertion order, shared between threads: ``add(future)``
    from producers, ``next()`` (blocking) from the consumer."""

    def __init__(self):
        self._queue = collections.deque()
        self._cvar = threading.Condition()

    def add(self, req):
        with self._cvar:
            self._queue.append(req)
            self._cvar.notify()

    def next(self, timeout=None):
        with self._cvar:
            if not self._cvar.wait_for(lambda: self._queue, timeout):
                raise TimeoutError("no request was added in time")
            return self._queue.popleft()

    def __len__(self):
        with self._cvar:
            return len(self._queue)
