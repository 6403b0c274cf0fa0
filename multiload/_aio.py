"""asyncio waits on the core's event fds, with no thread per wait.

Every object asyncio code can await (a queue, a reader, a file loader, a
writer) has an *event fd*: a non-blocking eventfd the C core writes when
something a waiter may be waiting for has happened (a block ready, a
request finished, a block committed or failed, a close). An awaiting
coroutine checks its condition and, when it does not hold, awaits
:func:`wait_fd`; it checks again when woken. Checking and registering run
on the loop's thread with no ``await`` between them, and the eventfd's
counter stays non-zero until drained here, so an event that lands between
the check and the registration still wakes the waiter.

One ``add_reader`` callback per (loop, fd) wakes every coroutine waiting on
that fd, so thousands of waiters on one reader cost one registration, no
threads. The callback drains the counter; a woken waiter whose condition
does not hold yet simply waits again.

Keyed waits (:func:`wait_key`) are for objects with many waiters that each
wait for one thing of their own (the Reader's requests): waking all of
them at every completion would cost O(waiters) per event. The object's
core keeps a list of the keys that are ready (``pop()`` takes it, never
waiting) and writes the fd when that list becomes non-empty; the callback
drains the fd *first*, then pops, so a key pushed after the pop finds the
list empty and writes the fd again. Each popped key wakes only its own
waiters: O(1) per completion.

Works with any loop that implements ``add_reader`` (asyncio's selector
loops, uvloop). One fd is best awaited from one loop at a time: two loops
on one fd each get woken, but one may drain the other's wake-up, and that
waiter then sleeps until the next event. (A popped key whose waiter is on
another loop is handed to that loop, so keyed waits never lose a key.)

Everything here runs on the loop's thread; nothing blocks.

May import: the standard library.
"""

import asyncio
import os

__all__ = ["wait_fd", "wait_key", "poll_fd"]

# (loop, fd) -> _Waiters; entries removed when their last waiter goes.
_registry = {}


class _Waiters:
    """The futures of one loop waiting for one fd to become readable."""

    def __init__(self, loop, fd):
        self.loop = loop
        self.fd = fd
        self.futures = set()  # generic waiters: woken at every event
        self.keyed = {}  # key -> [future, ...]: woken when pop() returns key
        self.pop = None  # the keyed waiters' pop(): ready keys, never waiting
        loop.add_reader(fd, self._ready)

    def _ready(self):
        try:
            os.read(self.fd, 8)  # an eventfd: drain its counter (before pop: see the module docstring)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass  # closed under us: wake everyone, they find the object closed
        futures, self.futures = self.futures, set()
        for fut in futures:
            if not fut.done():
                fut.set_result(None)
        if self.pop is not None:
            try:
                keys = self.pop()
            except Exception as e:  # noqa: BLE001 - handed to every keyed waiter, never lost
                keys = ()
                waiting, self.keyed = self.keyed, {}
                for futs in waiting.values():
                    for fut in futs:
                        if not fut.done():
                            fut.set_exception(e)
            for key in keys:
                self._deliver(key, forward=True)
        self._drop_if_idle()

    def _deliver(self, key, forward=False):
        futs = self.keyed.pop(key, None)
        if futs is None:
            if forward:
                _forward(self, key)
            return
        for fut in futs:
            if not fut.done():
                fut.set_result(None)

    def _drop_if_idle(self):
        if self.futures or self.keyed:
            return
        if _registry.get((self.loop, self.fd)) is not self:
            return  # replaced already (its own reader is registered)
        del _registry[(self.loop, self.fd)]
        try:
            self.loop.remove_reader(self.fd)
        except (OSError, ValueError, RuntimeError):
            pass  # the loop is closed, or the fd is gone

    def discard(self, fut, key=None):
        if key is None:
            self.futures.discard(fut)
        else:
            futs = self.keyed.get(key)
            if futs is not None:
                try:
                    futs.remove(fut)
                except ValueError:
                    pass
                if not futs:
                    del self.keyed[key]
        self._drop_if_idle()


def _forward(source, key):
    """A key popped by ``source`` that none of its loop's waiters wants:
    hand it to another loop waiting on the same fd for it, if any."""
    for (loop, fd), w in list(_registry.items()):
        if fd == source.fd and w is not source and key in w.keyed:
            try:
                loop.call_soon_threadsafe(w._deliver, key)
            except RuntimeError:
                pass  # that loop is closed
            return


def _waiters(fd):
    loop = asyncio.get_running_loop()
    w = _registry.get((loop, fd))
    if w is None:
        w = _registry[(loop, fd)] = _Waiters(loop, fd)
    return w


async def wait_fd(fd):
    """Return once ``fd`` (an eventfd of the core) has been written since it
    was last drained. Cancelling the await just stops waiting."""
    waiters = _waiters(fd)
    fut = waiters.loop.create_future()
    waiters.futures.add(fut)
    try:
        await fut
    finally:
        if not fut.done() or fut.cancelled():
            waiters.discard(fut)


async def wait_key(fd, key, pop, arm):
    """Return once ``pop()`` has returned ``key`` after ``fd`` fired.

    ``pop()`` returns the keys that became ready since its last call and
    never waits; every caller on one fd passes the same ``pop``. ``arm()``
    asks the core to report ``key`` (at once, through the fd, if it is
    ready already); it is called after this waiter is registered, so a key
    reported at once is not missed. ``arm()`` returning False means the
    object is gone and nothing will be reported: return at once. Cancelling
    the await just stops waiting (the caller decides what a cancelled wait
    means for its request)."""
    waiters = _waiters(fd)
    waiters.pop = pop
    fut = waiters.loop.create_future()
    waiters.keyed.setdefault(key, []).append(fut)
    try:
        if arm() is False:
            return
        await fut
    finally:
        if not fut.done() or fut.cancelled():
            waiters.discard(fut, key)


async def poll_fd(fd, poll, timeout=None, what="the awaited event"):
    """Call ``poll()`` until it returns something other than False, waiting
    for ``fd`` between calls; return that. ``poll()`` never waits and, when
    it returns False, has armed the core so that ``fd`` fires at the next
    event (the Stream's ``take_nowait``). ``timeout``: seconds, then
    TimeoutError naming ``what``; None: no limit."""
    got = poll()
    if got is not False:
        return got
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + max(0.0, float(timeout))
    while True:
        if deadline is None:
            await wait_fd(fd)
        else:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no {what} within {timeout} s")
            try:
                await asyncio.wait_for(wait_fd(fd), left)
            except asyncio.TimeoutError:
                pass  # look once more, then raise above
        got = poll()
        if got is not False:
            return got
