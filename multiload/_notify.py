"""The Reader's notification thread: it delivers finished requests.

A request is delivered -- its future completed, its done-callbacks run, and
``notify(future)`` called when the reader has a ``notify`` function -- when
it was submitted with ``notify`` (the reader has a notify function), or
when something *watches* it: ``add_done_callback``, or a stdlib waiter that
made its Future state (multiload.request). The C engine reports the tags of
those requests (``pop_done``); this thread maps each tag back to its future
(``_pending``) and delivers it. When the engine is closed (``pop_done``
returns None) the thread delivers whatever is left, calls
``notify(QueueClosed)`` and exits.

Invariants: every request submitted with notify is delivered once, even
one that finishes (read inline, or by a fast worker) before its future
exists: ``hold(tag)`` puts a placeholder in ``_pending`` before the submit,
and whichever of "the thread pops the tag" and "``submitted(fut)``" comes
second delivers it. Callbacks run on this thread, never under its lock.

The thread is started lazily (the first request that needs it), so a reader
without notify and without watched requests runs none.

May import: the standard library, :mod:`multiload._signals`.
"""

import logging
import threading

from ._signals import QueueClosed

__all__ = ["Notifier"]


class Notifier:
    """The notification thread of one reader and the futures it waits for."""

    def __init__(self, core, notify_fn):
        self._core = core  # _core.ReaderCore: pop_done(timeout) -> [tags] | None once closed
        self._notify_fn = notify_fn  # the reader's notify(future), or None
        self._lock = threading.Lock()
        # tag -> (Request, notify?) for requests this thread delivers;
        # None holds the place of one still being submitted (hold()). _lock.
        self._pending = {}
        self.thread = None  # the thread, once started; _lock

    def start(self):
        """Start the thread (once)."""
        with self._lock:
            if self.thread is not None:
                return
            self.thread = threading.Thread(target=self._run, name="multiload-reader-notify", daemon=True)
            self.thread.start()

    # -- requests submitted with notify
    def hold(self, tag):
        """Before submitting ``tag`` with notify: the tag may come back before
        its future exists; hold its place so that the thread can tell
        "finished early" from "not ours"."""
        with self._lock:
            self._pending[tag] = None

    def release(self, tag):
        """The submit of a held ``tag`` failed."""
        with self._lock:
            self._pending.pop(tag, None)

    def submitted(self, fut):
        """The future of a held tag exists: register it, or deliver it now if
        the thread took its tag already (or has exited)."""
        with self._lock:
            early = fut._tag not in self._pending  # the thread took the tag already
            if not early:
                self._pending[fut._tag] = (fut, True)
        if early or not self.thread.is_alive():  # (a dead one: stopped while we submitted)
            self._deliver(fut, True)

    # -- watched requests
    def watch(self, fut):
        """Have the thread deliver ``fut`` (run its callbacks, complete its
        Future state) once its request is done."""
        if fut._finished:
            return
        self.start()
        with self._lock:
            if fut._tag not in self._pending:
                self._pending[fut._tag] = (fut, False)
        fut._creq.watch()  # the engine reports the tag when done (now, if it is)
        if fut._creq.done():
            fut._finish()  # a stdlib waiter installing itself now is woken at once

    # -- the thread
    def _deliver(self, fut, notify):
        """A finished request: its callbacks, then notify(fut) if asked."""
        fut._finish()
        fut._run_callbacks()
        if notify and self._notify_fn is not None:
            try:
                self._notify_fn(fut)
            except Exception:  # noqa: BLE001 - a user callback must not stop the thread
                logging.getLogger("multiload").exception("exception in the reader's notify callback")

    def _run(self):
        core = self._core
        while True:
            tags = core.pop_done(0.1)
            with self._lock:
                # A None entry is a request still being submitted: it delivers itself.
                entries = [self._pending.pop(t) for t in tags or () if t in self._pending]
            for e in entries:
                if e is not None:
                    self._deliver(*e)
            if tags is None:
                with self._lock:
                    rest = [e for e in self._pending.values() if e is not None]
                    self._pending.clear()
                for fut, notify in rest:
                    fut._wait()
                    self._deliver(fut, notify)
                if self._notify_fn is not None:
                    self._notify_fn(QueueClosed)
                return
