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

Works with any loop that implements ``add_reader`` (asyncio's selector
loops, uvloop). One fd is best awaited from one loop at a time: two loops
on one fd each get woken, but one may drain the other's wake-up, and that
waiter then sleeps until the next event.

May import: the standard library.
"""

import asyncio
import os

__all__ = ["wait_fd"]

# (loop, fd) -> _Waiters; entries removed when their last waiter goes.
_registry = {}


class _Waiters:
    """The futures of one loop waiting for one fd to become readable."""

    def __init__(self, loop, fd):
        self.loop = loop
        self.fd = fd
        self.futures = set()
        loop.add_reader(fd, self._ready)

    def _ready(self):
        try:
            os.read(self.fd, 8)  # an eventfd: drain its counter
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass  # closed under us: wake everyone, they find the object closed
        futures, self.futures = self.futures, set()
        for fut in futures:
            if not fut.done():
                fut.set_result(None)
        self._drop_if_idle()

    def _drop_if_idle(self):
        if self.futures:
            return
        if _registry.get((self.loop, self.fd)) is self:
            del _registry[(self.loop, self.fd)]
        try:
            self.loop.remove_reader(self.fd)
        except (OSError, ValueError, RuntimeError):
            pass  # the loop is closed, or the fd is gone

    def discard(self, fut):
        self.futures.discard(fut)
        self._drop_if_idle()


async def wait_fd(fd):
    """Return once ``fd`` (an eventfd of the core) has been written since it
    was last drained. Cancelling the await just stops waiting."""
    loop = asyncio.get_running_loop()
    waiters = _registry.get((loop, fd))
    if waiters is None:
        waiters = _registry[(loop, fd)] = _Waiters(loop, fd)
    fut = loop.create_future()
    waiters.futures.add(fut)
    try:
        await fut
    finally:
        if not fut.done() or fut.cancelled():
            waiters.discard(fut)
