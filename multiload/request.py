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

    def busy(self):
        return False

    def watch(self):
        pass

    def cancel(self):
        return False

    def status(self):
        return "ok" if self._exc is None else "error"

    def check(self):
        if self._exc is not None:
            raise self._exc


# ---------------------------------------------------------------- the proxy

class _Proxy:
    """Forwards everything to an array until released; afterwards every use
    raises RuntimeError (the stage may hold another request's data by then).

    As multitables' proxy (a wrapt ObjectProxy): attributes, indexing,
    iteration, ``len``, ``in``, every arithmetic, reflected, in-place and
    comparison operator, conversions, ``np.asarray(proxy)`` and numpy
    ufuncs, and ``isinstance(proxy, np.ndarray)``."""

    __slots__ = ("_obj",)

    def __init__(self, obj):
        object.__setattr__(self, "_obj", obj)

    def _get(self):
        obj = object.__getattribute__(self, "_obj")
        if obj is None:
            raise RuntimeError("this proxy was released (its with-block ended): the stage may hold another "
                               "request's data now; copy what you need inside the block")
        return obj

    def release(self):
        object.__setattr__(self, "_obj", None)

    @property
    def __class__(self):  # isinstance(proxy, np.ndarray), as wrapt's proxies
        obj = object.__getattribute__(self, "_obj")
        return _Proxy if obj is None else type(obj)

    def __getattr__(self, name):
        return getattr(self._get(), name)

    def __setattr__(self, name, value):
        setattr(self._get(), name, value)

    def __delattr__(self, name):
        delattr(self._get(), name)

    def __dir__(self):
        return dir(self._get())

    def __repr__(self):
        obj = object.__getattribute__(self, "_obj")
        return "<released multiload proxy>" if obj is None else f"proxy({obj!r})"

    def __str__(self):
        return str(self._get())

    def __format__(self, spec):
        return format(self._get(), spec)

    __hash__ = None  # as the array's: unhashable

    def __bool__(self):
        return bool(self._get())

    def __array__(self, dtype=None, copy=None):
        a = self._get()
        if copy:
            return np.array(a, dtype=dtype, copy=True)
        return a if dtype is None else a.astype(dtype, copy=False)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(_unwrap(x) for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(x) for x in kwargs["out"])
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __copy__(self):
        return self._get().copy()

    def __deepcopy__(self, memo):
        return self._get().copy()

    def __reduce_ex__(self, protocol):  # pickles as the array it shows
        return self._get().__reduce_ex__(protocol)

    # in-place operators change the array (the stage) and keep the proxy
    def _inplace(self, name, other):
        obj = self._get()
        res = getattr(obj, name)(_unwrap(other))
        if res is NotImplemented:
            return res
        if res is not obj:
            object.__setattr__(self, "_obj", res)
        return self


def _unwrap(x):
    return x._get() if type(x) is _Proxy else x


def _forward(name):
    def op(self, *args):
        return getattr(self._get(), name)(*(_unwrap(a) for a in args))
    op.__name__ = op.__qualname__ = name
    return op


def _forward_inplace(name):
    def op(self, other):
        return self._inplace(name, other)
    op.__name__ = op.__qualname__ = name
    return op


_BINARY = ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "divmod", "pow", "lshift", "rshift",
           "and", "xor", "or")
for _n in _BINARY:
    setattr(_Proxy, f"__{_n}__", _forward(f"__{_n}__"))
    setattr(_Proxy, f"__r{_n}__", _forward(f"__r{_n}__"))
    if _n != "divmod":
        setattr(_Proxy, f"__i{_n}__", _forward_inplace(f"__i{_n}__"))
for _n in ("lt", "le", "eq", "ne", "gt", "ge", "neg", "pos", "abs", "invert", "int", "float", "complex", "index",
           "len", "iter", "getitem", "setitem", "delitem"):
    setattr(_Proxy, f"__{_n}__", _forward(f"__{_n}__"))
del _n


def _reversed(self):
    return reversed(self._get())


def _contains(self, x):
    return _unwrap(x) in self._get()


def _round(self, *nd):
    return round(self._get(), *nd)


def _trunc(self):
    import math
    return math.trunc(self._get())


def _floor(self):
    import math
    return math.floor(self._get())


def _ceil(self):
    import math
    return math.ceil(self._get())


# Python-level protocols the array has no dunder for: through the builtins.
_Proxy.__reversed__ = _reversed
_Proxy.__contains__ = _contains
_Proxy.__round__ = _round
_Proxy.__trunc__ = _trunc
_Proxy.__floor__ = _floor
_Proxy.__ceil__ = _ceil


# ---------------------------------------------------------------- the future

_FUT = concurrent.futures.Future
_PENDING = concurrent.futures._base.PENDING
_FINISHED = concurrent.futures._base.FINISHED
_CANCELLED = concurrent.futures._base.CANCELLED_AND_NOTIFIED
_TAKEN_GET, _TAKEN_RESULT = 1, 2
_COND_LOCK = threading.Lock()  # creates a future's Condition (only when a stdlib waiter looks)


class _Waiters(list):
    """The future's list of concurrent.futures waiters. wait() and
    as_completed() append to it and then only watch the future's state:
    appending makes the reader report this request's completion (its
    notification thread then completes the future's state)."""

    __slots__ = ("_fut",)

    def append(self, waiter):
        list.append(self, waiter)
        self._fut._reader._watch(self._fut)


class Request(concurrent.futures.Future):
    """A future for one request (multitables' ``Request``): a
    :class:`concurrent.futures.Future`, so ``concurrent.futures.wait``,
    ``as_completed`` and ``asyncio.wrap_future`` accept it, and ``await``
    works.

    multitables' methods take the result once: ``get()`` (a copy),
    ``get_direct(fn)``, ``with get_unsafe() as view``, ``with get_proxy() as
    view``; that frees the stage, and a second take raises RuntimeError
    (the stage may hold other data by then). ``result()`` takes a copy the
    first time, keeps it and returns the same array every time; ``get()``
    (and the other get methods) after ``result()`` serve that kept copy too.
    ``result()`` after ``get()`` raises RuntimeError, since ``get()`` keeps
    no copy. An error is raised by every one of them, every time.
    """

    # concurrent.futures.Future state, set up lazily: Future.__init__ would
    # make a Condition per request (~1 us); these class defaults stand in
    # until the future completes or a stdlib waiter looks (see _complete).
    _state = _PENDING
    _result = None
    _exception = None
    _done_callbacks = ()  # callbacks live in self._callbacks, run by the reader

    # Our own state: class defaults, set on the instance when they change
    # (each instance attribute costs on the one-row fast path).
    _taken = 0  # _TAKEN_GET or _TAKEN_RESULT once the result was taken
    _copy = None  # result()'s copy
    _cancelled = False
    _finished = False
    _exc = None
    _callbacks = None
    _callbacks_ran = False
    _cond = None
    _waiter_list = None

    @property
    def _condition(self):
        c = self._cond
        if c is None:
            with _COND_LOCK:
                c = self._cond
                if c is None:
                    c = self._cond = threading.Condition()
        return c

    @property
    def _waiters(self):
        w = self._waiter_list
        if w is None:
            with _COND_LOCK:
                w = self._waiter_list
                if w is None:
                    w = _Waiters()
                    w._fut = self
                    self._waiter_list = w
        return w

    def __init__(self, reader, stage, creq, plan, temp, tag=0):
        self._reader = reader
        self._stage = stage
        self._held = [stage]  # emptied (atomically: list.pop) when the stage is released
        self._creq = creq
        self._plan = plan
        self._temp = temp  # fetched rows when numpy indexing is left to do
        self._tag = tag
        self._lock = threading.Lock()
        self._finished = False
        self._taken = 0
        self._state = _PENDING

    # -- completion
    def _wait(self, timeout=None):
        if not self._finished:
            if not self._creq.wait(timeout):
                return False
            self._complete()
        return True

    def _finish(self):
        """Complete the future if its C request is done."""
        if not self._finished and self._creq.done():
            self._complete()

    def _complete(self):
        """The C request is done: settle the outcome once, then complete the
        concurrent.futures state (waking stdlib waiters)."""
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
            if self._temp is not None:
                self._temp = None
            self._finished = True
        # The stdlib state, as Future.set_result / set_exception / cancel
        # leave it (result() makes the value: see there). State first, then
        # look for a Condition: a stdlib waiter creates it before it reads
        # the state, so it either sees the final state or is woken here.
        if self._exc is not None:
            self._exception = self._exc
        self._state = _CANCELLED if self._cancelled else _FINISHED
        cond = self._cond
        if cond is not None:
            with cond:
                for w in self._waiters:
                    if self._cancelled:
                        w.add_cancelled(self)
                    elif self._exc is not None:
                        w.add_exception(self)
                    else:
                        w.add_result(self)
                cond.notify_all()

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

    def _settle(self, timeout=None):
        """Wait; raise CancelledError, TimeoutError or the request's error
        (freeing the stage)."""
        if not self._finished and not self._wait(timeout):
            raise concurrent.futures.TimeoutError(f"the request did not finish within {timeout} s")
        if self._cancelled:
            raise concurrent.futures.CancelledError()
        if self._exc is not None:
            self._stage_release()
            raise self._exc

    def _take(self):
        """Wait, then take the result for a get method. Returns the copy
        result() kept, or None: the result is in the stage, to be freed by
        the caller."""
        if not self._finished:  # _settle(), unrolled: the one-row fast path
            self._wait()
        if self._cancelled:
            raise concurrent.futures.CancelledError()
        if self._exc is not None:
            self._stage_release()
            raise self._exc
        with self._lock:
            if self._taken == _TAKEN_RESULT:
                return self._copy
            if self._taken == _TAKEN_GET:
                raise RuntimeError("this request's result was already taken; its stage may hold other data now "
                                   "(use get() once, or keep result())")
            self._taken = _TAKEN_GET
        return None

    def _stage_release(self):
        """Free the stage (once), now or -- while a worker may still write
        into it -- once that write is over."""
        try:
            stage = self._held.pop()  # atomic: one caller gets it
        except IndexError:
            return
        # A request that succeeded has released its buffer; any other may
        # not have (running, or failed by stop() during its read).
        if (self._exc is not None or not self._finished) and self._plan.post is None and self._creq.busy():
            stage._release_when_written(self._creq)
        else:
            stage._release()

    @contextlib.contextmanager
    def get_unsafe(self):
        """Yield the result as a view of the stage; the stage is freed when
        the with-block ends (the view must not be used after). After
        result(), yields its kept copy."""
        kept = self._take()
        if kept is not None:
            yield kept
            return
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
        """Wait and return a copy of the result (frees the stage). After
        result(), returns the copy result() keeps."""
        kept = self._take()
        if kept is not None:
            return kept
        try:
            return self._view().copy()
        finally:
            self._stage_release()

    # -- concurrent.futures.Future
    def done(self):
        if self._finished:
            return True
        if self._creq.done():
            self._finish()
            return True
        return False

    def running(self):
        return not self.done() and self._creq.status() == "running"

    def cancelled(self):
        return self.done() and self._cancelled

    def cancel(self):
        """Cancel a request that is still queued (True: it never touches
        its stage, which is free at once); a running or finished one is not
        cancelled (False) and completes as usual."""
        if self.done():
            return self._cancelled
        if not self._creq.cancel():
            return False
        self._finish()
        self._stage_release()
        self._run_callbacks()
        return True

    def result(self, timeout=None):
        """The result (a copy, kept: every call returns the same array).
        Raises TimeoutError after ``timeout`` seconds, CancelledError, or the
        request's error."""
        self._settle(timeout)
        with self._lock:
            if self._taken == _TAKEN_RESULT:
                return self._copy
            if self._taken == _TAKEN_GET:
                raise RuntimeError("this request's result was already taken by get() (or another get method), "
                                   "which keeps no copy; call result() alone to take it more than once")
            self._taken = _TAKEN_RESULT
            self._copy = self._view().copy()
        self._stage_release()
        return self._copy

    def exception(self, timeout=None):
        """The request's error, or None; TimeoutError after ``timeout``
        seconds, CancelledError if cancelled. Takes nothing."""
        if not self._wait(timeout):
            raise concurrent.futures.TimeoutError(f"the request did not finish within {timeout} s")
        if self._cancelled:
            raise concurrent.futures.CancelledError()
        return self._exc

    def add_done_callback(self, fn):
        """Call ``fn(future)`` once the request is done: from the reader's
        notification thread, or at once if it is done already."""
        if not self.done():
            with self._lock:
                if not self._callbacks_ran:
                    if self._callbacks is None:
                        self._callbacks = []
                    self._callbacks.append(fn)
                    fn = None
            if fn is None:
                self._reader._watch(self)
                return
        self._run_callbacks()  # earlier ones first
        if fn is not None:
            _call(fn, self)

    def set_result(self, result):
        raise RuntimeError("a Reader future is completed by its reader")

    set_exception = set_result

    def set_running_or_notify_cancel(self):
        raise RuntimeError("a Reader future is completed by its reader")

    def _run_callbacks(self):
        with self._lock:
            if self._callbacks_ran:
                return
            self._callbacks_ran = True
            cbs, self._callbacks = self._callbacks or (), None
        for fn in cbs:
            _call(fn, self)

    def __await__(self):
        if not self.done():
            import asyncio

            # wrap_future cancels the request if the awaiting task is cancelled
            yield from asyncio.wrap_future(self).__await__()
        return self.result()

    def __del__(self):
        # Never waits: a queued request is cancelled; the stage of one being
        # read is freed once the read is over (see Stage._release_when_written).
        try:
            if not self._held:
                return
            self._creq.cancel()
            self._stage_release()
        except Exception:  # noqa: BLE001 - never raise from __del__
            pass

    def __repr__(self):
        if not self.done():
            state = "running" if self._creq.status() == "running" else "pending"
        else:
            state = "cancelled" if self._cancelled else ("failed" if self._exc is not None else "finished")
        return f"<multiload Request {state}>"


def _call(fn, fut):
    try:
        fn(fut)
    except Exception:  # noqa: BLE001 - as concurrent.futures: log and go on
        import logging

        logging.getLogger("multiload").exception("exception calling callback for %r", fut)


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
