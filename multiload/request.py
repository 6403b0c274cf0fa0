"""Futures for Reader requests (multitables' ``Request`` and
``RequestPool``), with concurrent.futures methods and ``await``."""

import collections
import concurrent.futures
import contextlib
import threading

import numpy as np

from ._signals import QueueClosedException, SubprocessException

__all__ = ["Request", "RequestPool"]

_exc_classes = {}


def _background_error(cause):
    """An exception that is both a SubprocessException and an instance of
    the cause's type (multitables' pattern), chained to the cause."""
    base = type(cause)
    cls = _exc_classes.get(base)
    if cls is None:
        try:
            cls = type(base.__name__, (base, SubprocessException), {"__module__": base.__module__})
        except TypeError:  # a final class: keep the cause's type only through __cause__
            cls = SubprocessException
        _exc_classes[base] = cls
    try:
        e = cls(*cause.args)
    except Exception:
        e = SubprocessException(str(cause))
    for attr in ("errno", "strerror", "filename"):
        if getattr(cause, attr, None) is not None:
            try:
                setattr(e, attr, getattr(cause, attr))
            except (AttributeError, TypeError):
                pass
    e.__cause__ = cause
    return e


class _Done:
    """Stands in for a C request whose result was produced synchronously."""

    def __init__(self, exc=None):
        self._exc = exc

    def wait(self, timeout=None):
        return True

    def done(self):
        return True

    def cancel(self):
        return False

    def status(self):
        return "ok" if self._exc is None else "error"

    def check(self):
        if self._exc is not None:
            raise self._exc


class _Proxy:
    """Forwards to an array until released; afterwards every use raises."""

    __slots__ = ("_obj",)

    def __init__(self, obj):
        object.__setattr__(self, "_obj", obj)

    def _get(self):
        obj = object.__getattribute__(self, "_obj")
        if obj is None:
            raise RuntimeError("this proxy was released: the stage may hold another request's data")
        return obj

    def release(self):
        object.__setattr__(self, "_obj", None)

    def __getattr__(self, name):
        return getattr(self._get(), name)

    def __setattr__(self, name, value):
        setattr(self._get(), name, value)

    def __getitem__(self, k):
        return self._get()[k]

    def __setitem__(self, k, v):
        self._get()[k] = v

    def __len__(self):
        return len(self._get())

    def __iter__(self):
        return iter(self._get())

    def __array__(self, dtype=None, copy=None):
        a = self._get()
        return np.array(a, dtype=dtype, copy=True) if (dtype is not None or copy) else a

    def __eq__(self, o):
        return self._get() == o

    def __ne__(self, o):
        return self._get() != o

    def __repr__(self):
        obj = object.__getattribute__(self, "_obj")
        return "<released proxy>" if obj is None else f"proxy({obj!r})"


def _make_binop(name):
    def op(self, *args):
        return getattr(self._get(), name)(*args)
    op.__name__ = name
    return op


for _n in ("__add__", "__sub__", "__mul__", "__truediv__", "__lt__", "__le__", "__gt__", "__ge__",
           "__radd__", "__rsub__", "__rmul__", "__neg__", "__abs__", "__bool__", "__float__", "__int__"):
    setattr(_Proxy, _n, _make_binop(_n))


class Request:
    """A future for one request (multitables' ``Request``), with
    concurrent.futures methods and ``await`` support on top.

    Take the result once, with ``get()`` (a copy), ``get_direct(fn)``,
    ``with get_unsafe() as view`` or ``with get_proxy() as view``; that
    frees the stage. ``result()`` may be called again (it keeps a copy).
    """

    def __init__(self, reader, stage, creq, plan, temp):
        self._reader = reader
        self._stage = stage
        self._creq = creq
        self._plan = plan
        self._temp = temp  # fetched rows when numpy indexing is left to do
        self._lock = threading.Lock()
        self._consumed = False
        self._cancelled = False
        self._finished = False
        self._exc = None
        self._result = None
        self._callbacks = []
        self._callbacks_ran = False
        self._released = False

    # -- completion
    def _wait(self, timeout=None):
        if not self._creq.wait(timeout):
            return False
        self._finish()
        return True

    def _finish(self):
        with self._lock:
            if self._finished:
                return
            status = self._creq.status()
            if status == "ok":
                if self._plan is not None and self._plan.post is not None:
                    try:
                        self._postprocess()
                    except BaseException as e:  # noqa: BLE001 - delivered to the consumer
                        self._exc = e if isinstance(e, SubprocessException) else _background_error(e)
            elif status == "cancelled":
                self._cancelled = True
            elif status == "closed":
                self._exc = _background_error(QueueClosedException("This reader has been closed."))
            else:
                try:
                    self._creq.check()
                    if self._plan is not None and self._plan.post is not None:
                        self._postprocess()
                except BaseException as e:  # noqa: BLE001 - delivered to the consumer
                    self._exc = e if isinstance(e, SubprocessException) else _background_error(e)
            self._temp = None
            self._finished = True

    def _postprocess(self):
        p = self._plan
        res = self._temp
        for k in p.post:
            res = res[k]
        out = self._stage._view(p.dtype, p.shape)
        out[...] = res

    def _view(self):
        p = self._plan
        return self._stage._buf[:p.nbytes].view(p.dtype).reshape(p.shape)

    def _take(self):
        """Wait, then mark consumed; raise the request's error (after
        freeing the stage)."""
        self._wait_interruptibly()
        with self._lock:
            if self._consumed:
                raise RuntimeError("this request's result was already taken; its stage may hold other data now "
                                   "(use get() once, or keep result())")
            if self._cancelled:
                raise concurrent.futures.CancelledError()
            self._consumed = True
        if self._exc is not None:
            self._stage_release()
            raise self._exc

    def _wait_interruptibly(self, timeout=None):
        return self._wait(timeout)

    def _stage_release(self):
        if self._released:
            return
        self._released = True
        self._stage._release()

    @contextlib.contextmanager
    def get_unsafe(self):
        """Yield the result as a view of the stage; the stage is freed when
        the with-block ends (the view must not be used after)."""
        self._take()
        try:
            yield self._view()
        finally:
            self._stage_release()

    def get_direct(self, action):
        """Call ``action(view)`` with the result viewed in the stage."""
        with self.get_unsafe() as data:
            return action(data)

    @contextlib.contextmanager
    def get_proxy(self):
        """Yield a proxy of the result that raises once the block ends."""
        with self.get_unsafe() as data:
            proxy = _Proxy(data)
            try:
                yield proxy
            finally:
                proxy.release()

    def get(self):
        """Wait and return a copy of the result (frees the stage)."""
        self._take()
        try:
            return self._view().copy()
        finally:
            self._stage_release()

    # -- concurrent.futures.Future
    def done(self):
        return self._cancelled or self._creq.done()

    def running(self):
        return self._creq.status() == "running"

    def cancelled(self):
        if self._creq.done():
            self._finish()
        return self._cancelled

    def cancel(self):
        """Cancel a request that is still queued (True); a running or
        finished one is not cancelled (False) and completes as usual."""
        if self._cancelled:
            return True
        if not self._creq.cancel():
            return False
        self._finish()
        with self._lock:
            self._consumed = True
        self._stage_release()
        self._reader._run_callbacks_soon(self)
        return True

    def result(self, timeout=None):
        if not self._wait(timeout):
            raise TimeoutError(f"the request did not finish within {timeout} s")
        if self._cancelled:
            raise concurrent.futures.CancelledError()
        if self._exc is not None:
            raise self._exc
        with self._lock:
            have = self._result is not None
        if not have:
            res = self.get()
            with self._lock:
                self._result = res
        return self._result

    def exception(self, timeout=None):
        if not self._wait(timeout):
            raise TimeoutError(f"the request did not finish within {timeout} s")
        if self._cancelled:
            raise concurrent.futures.CancelledError()
        return self._exc

    def add_done_callback(self, fn):
        """Call ``fn(future)`` once the request is done (from the reader's
        notification thread, or at once if it is done already)."""
        with self._lock:
            if not self._callbacks_ran:
                self._callbacks.append(fn)
                fn = None
        if fn is not None:
            fn(self)
        else:
            self._reader._watch(self)

    def _run_callbacks(self):
        with self._lock:
            if self._callbacks_ran:
                return
            self._callbacks_ran = True
            cbs, self._callbacks = self._callbacks, []
        for fn in cbs:
            try:
                fn(self)
            except Exception:  # noqa: BLE001 - as concurrent.futures: log and go on
                import logging

                logging.getLogger("multiload").exception("exception calling callback for %r", self)

    def __await__(self):
        import asyncio

        if not self.done():
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()

            def wake(_):
                loop.call_soon_threadsafe(lambda: waiter.done() or waiter.set_result(None))

            self.add_done_callback(wake)
            yield from waiter.__await__()
        return self.result()

    def __del__(self):
        try:
            if getattr(self, "_released", False) or not hasattr(self, "_creq"):
                return
            if not self._creq.cancel():
                self._creq.wait(None)
            self._released = True
            self._stage._release()
        except Exception:  # noqa: BLE001 - never raise from __del__
            pass

    def __repr__(self):
        state = "cancelled" if self._cancelled else ("finished" if self.done() else "pending")
        return f"<multiload Request {state}>"


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
