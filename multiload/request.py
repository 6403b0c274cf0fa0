"""Request life: the future of one Reader request (multitables' ``Request``).

The reader makes a Request once it has submitted a plan to the C engine
(or, for a VLArray, read the rows already). From then on the Request owns,
and nothing else does:

* the outcome, settled once (``_complete``) when the C request is done: ok
  (numpy's remaining indexing is applied to the fetched rows then),
  cancelled, closed by ``stop()``, or an error, raised as an instance of
  both SubprocessException and the original type (``_background_error``);
* taking the result: the get methods take it once, ``result()`` takes a copy
  and keeps it;
* the end of its stage loan (:mod:`multiload.stage` states the rule), when
  the result is taken or the request is cancelled, failed or dropped;
* its done-callbacks, run once;
* its face as a :class:`concurrent.futures.Future` (below).

The Future face
---------------
A Request is a ``concurrent.futures.Future``: ``isinstance``,
``concurrent.futures.wait`` / ``as_completed``, ``asyncio.wrap_future`` and
``await`` take it (``await`` waits on the reader's event fd, not on the
Future state: see ``__await__``). A Future's own state costs about 0.8 us to make (a
Condition) and 0.9 us to complete, a quarter of a one-row ``get()``, and
only the stdlib helpers look at it (``wait`` and ``as_completed`` read its
condition, state and waiter list). So it is made lazily: the first read of
any attribute a Future instance has (the names are taken from a real Future
at import; none is spelled here) reaches a descriptor on the class
(``_FaceField``), which runs ``Future.__init__(self)`` and has the reader's
notification thread watch the request. The outcome then reaches the Future state through the public
``Future.set_result`` / ``set_exception`` / ``cancel`` +
``set_running_or_notify_cancel`` -- exactly once, by whichever of "settled"
and "face made" happens second (both under the request's lock) -- which wake
the stdlib waiters. Every public method of Future is overridden here
(tests/test_reader_future_face.py checks it), so Future's own methods never
run on a Request without its state, and no Future attribute is written
directly.

May import: the standard library, numpy, :mod:`multiload._signals`,
:mod:`multiload._proxy`, :mod:`multiload._request_pool`,
:mod:`multiload.stage` (``end_loan``), :mod:`multiload._handle` (``unpicklable``),
:mod:`multiload._aio` (``await``: the reader's event fd). It knows the C
request only through its methods (wait, done, busy, watch, arm, cancel, status,
check) and the reader only as the notifier that watches it.
"""

import concurrent.futures
import contextlib
import threading

from ._handle import unpicklable
from ._proxy import _Proxy
from ._request_pool import RequestPool
from ._signals import QueueClosedException, SubprocessException
from .stage import end_loan

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


# ---------------------------------------------------------------- the future

_FUT = concurrent.futures.Future
#: The attributes Future.__init__ gives an instance: reading one on a Request
#: makes its Future state (see the module docstring).
_FUTURE_FIELDS = frozenset(vars(_FUT()))
_TAKEN_GET, _TAKEN_RESULT, _TAKEN_ABANDONED = 1, 2, 3


_ABANDONED = ("the task awaiting this request was cancelled while it ran: its result was discarded "
              "(and its stage freed once the read is over)")


class _FaceField:
    """Stands, on the Request class, for one attribute a Future instance
    has, until the request's Future state is made: reading it makes the
    state (``Future.__init__`` then stores the real attribute on the
    instance, which hides this non-data descriptor from then on).

    A descriptor per name rather than ``__getattr__``: a class with
    ``__getattr__`` makes every attribute read on its instances slower
    (CPython does not specialise them), about 2 us per one-row request."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        obj._make_face()
        return obj.__dict__[self.name]


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

    # Class defaults, set on the instance only when they change: each
    # instance attribute costs on the one-row fast path. None of these is a
    # Future attribute (a class attribute of that name would hide the face).
    _taken = 0  # _TAKEN_GET or _TAKEN_RESULT once the result was taken; _lock
    _copy = None  # result()'s kept copy
    _cancelled = False  # outcome, set once by _complete (then _finished)
    _exc = None  # outcome: the error every take raises
    _finished = False  # the outcome is settled; set under _lock
    _face = False  # Future.__init__ has run on self; set under _lock
    _callbacks = None  # add_done_callback's functions, until run; _lock
    _callbacks_ran = False
    _res = None  # the result array the rows were read straight into, instead of the stage (large results)

    # (the _FaceField descriptors are set on the class below)

    __reduce_ex__ = unpicklable(
        "a request is a read in flight in this process",
        "pickle its result (request.get()), or the dataset (or Reader) and make the request "
        "in the process that reads")

    def __init__(self, notifier, loan, creq, plan, temp, tag=0, res=None):
        # Future.__init__ is not called here: see the module docstring.
        self._notifier = notifier  # watch(request): the reader's notification thread
        self._loan = loan  # the stage loan (multiload.stage): [stage] until ended, then []
        self._creq = creq  # the C request (or _Done)
        self._plan = plan
        self._temp = temp  # fetched rows when numpy indexing is left to do; dropped once settled
        self._tag = tag
        self._lock = threading.Lock()
        if res is not None:
            self._res = res

    # -- the Future face
    def _make_face(self):
        """Make the Future state (once) and have it completed: now if the
        outcome is settled, else by the notification thread."""
        with self._lock:
            if self._face:
                return
            _FUT.__init__(self)
            self._face = True
            settled = self._finished
        if settled:
            self._settle_face()
        else:
            self._notifier.watch(self)

    def _settle_face(self):
        """Hand the settled outcome to the Future state (called once)."""
        if self._cancelled:
            _FUT.cancel(self)
            _FUT.set_running_or_notify_cancel(self)
        elif self._exc is not None:
            _FUT.set_exception(self, self._exc)
        else:
            _FUT.set_result(self, None)  # the value is made by result(): see there

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
        """The C request is done: settle the outcome once, then hand it to
        the Future state if that was made."""
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
            face = self._face
        if face:
            self._settle_face()

    def _postprocess(self):
        p = self._plan
        res = self._temp
        for k in p.post:
            res = res[k]
        out = self._loan[0]._view(p.dtype, p.shape)
        out[...] = res

    def _view(self):
        if self._res is not None:
            return self._res
        p = self._plan
        return self._loan[0]._buf[:p.nbytes].view(p.dtype).reshape(p.shape)

    def _settle(self, timeout=None):
        """Wait; raise CancelledError, TimeoutError or the request's error
        (ending the stage loan)."""
        if not self._finished and not self._wait(timeout):
            raise concurrent.futures.TimeoutError(f"the request did not finish within {timeout} s")
        if self._cancelled:
            raise concurrent.futures.CancelledError()
        if self._exc is not None:
            self._end_loan()
            raise self._exc

    def _take(self):
        """Wait, then take the result for a get method. Returns the copy
        result() kept, or None: the result is in the stage, whose loan the
        caller ends."""
        if not self._finished:  # _settle(), unrolled: the one-row fast path
            self._wait()
        if self._cancelled:
            raise concurrent.futures.CancelledError()
        if self._exc is not None:
            self._end_loan()
            raise self._exc
        with self._lock:
            if self._taken == _TAKEN_RESULT:
                return self._copy
            if self._taken == _TAKEN_ABANDONED:
                raise concurrent.futures.CancelledError(_ABANDONED)
            if self._taken == _TAKEN_GET:
                raise RuntimeError("this request's result was already taken; its stage may hold other data now "
                                   "(use get() once, or keep result())")
            self._taken = _TAKEN_GET
        return None

    def _end_loan(self):
        """End the stage loan (once), naming the C request as the writer
        when it may still write into the stage -- by the rule in
        multiload.stage: the rows go straight into the stage (plan.post is
        None) and the request has not settled with success or as
        cancelled. A result read into an array of its own (``_res``) never
        touches the stage. The stage module decides when the stage is free."""
        if self._res is None and self._plan.post is None and not (self._finished and self._exc is None):
            end_loan(self._loan, self._creq)
        else:
            end_loan(self._loan)

    @contextlib.contextmanager
    def get_unsafe(self):
        """Yield the result as a view of the stage (or, for a large result,
        of the memory it was read into); the stage is freed when the
        with-block ends (the view must not be used after). After result(),
        yields its kept copy."""
        kept = self._take()
        if kept is not None:
            yield kept
            return
        try:
            yield self._view()
        finally:
            self._end_loan()

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
        res = self._res
        if res is not None:  # read straight into an array of its own: it is the copy
            self._end_loan()
            return res
        p = self._plan
        try:
            return self._loan[0]._buf[:p.nbytes].view(p.dtype).reshape(p.shape).copy()  # _view(), inlined
        finally:
            self._end_loan()

    # -- concurrent.futures.Future (every public method: see the module docstring)
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
        self._end_loan()
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
            if self._taken == _TAKEN_ABANDONED:
                raise concurrent.futures.CancelledError(_ABANDONED)
            if self._taken == _TAKEN_GET:
                raise RuntimeError("this request's result was already taken by get() (or another get method), "
                                   "which keeps no copy; call result() alone to take it more than once")
            self._taken = _TAKEN_RESULT
            self._copy = self._res if self._res is not None else self._view().copy()
        self._end_loan()
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
                self._notifier.watch(self)
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
        """``await request``: the result, as :meth:`result` (a kept copy).

        Woken from the C core through the reader's event fd (one
        ``add_reader`` per loop, no thread; multiload._aio.wait_key), so any
        number of requests can be awaited at once. Cancelling the awaiting
        task applies the cancellation states (docs/async.md): a queued
        request is cancelled (it never runs, its stage is free at once); a
        running or finished one is *abandoned*: its result is discarded, its
        stage freed once no thread writes it, and a later take raises
        CancelledError."""
        if not self.done():
            from . import _aio

            core = self._notifier._core
            try:
                while not self.done():
                    yield from _aio.wait_key(core.event_fd(), self._tag, core.pop_armed,
                                             self._creq.arm).__await__()
            except BaseException:  # CancelledError (task cancelled), KeyboardInterrupt, loop closing
                self._abandon()
                raise
        return self.result()

    def _abandon(self):
        """The awaiting task gave up: cancel the request if it is queued,
        else discard its result (now, or whenever it completes) and end the
        stage loan -- the stage is free once no thread writes it
        (multiload.stage). Never waits. A result already taken stays taken."""
        if self.cancel():
            return
        with self._lock:
            if self._taken:
                return
            self._taken = _TAKEN_ABANDONED
        self._end_loan()

    def __del__(self):
        # Never waits: a queued request is cancelled; the stage of one being
        # read is freed once the read is over (the rule in multiload.stage).
        try:
            if not self._loan:
                return
            self._creq.cancel()
            self._end_loan()
        except Exception:  # noqa: BLE001 - never raise from __del__
            pass

    def __repr__(self):
        if not self.done():
            state = "running" if self._creq.status() == "running" else "pending"
        else:
            state = "cancelled" if self._cancelled else ("failed" if self._exc is not None else "finished")
        return f"<multiload Request {state}>"


for _name in _FUTURE_FIELDS:
    setattr(Request, _name, _FaceField(_name))
del _name


def _call(fn, fut):
    try:
        fn(fut)
    except Exception:  # noqa: BLE001 - as concurrent.futures: log and go on
        import logging

        logging.getLogger("multiload").exception("exception calling callback for %r", fut)
