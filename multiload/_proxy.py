"""The proxy of ``future.get_proxy()``: the result array, until its
with-block ends.

It forwards everything to the array it wraps (as multitables' wrapt
ObjectProxy does) and, once released, raises RuntimeError on every use: the
stage under it may hold another request's data by then. Its one concern is
that forwarding; the request (:mod:`multiload.request`) decides when to
release it.

May import: numpy.
"""

import numpy as np

__all__ = ["_Proxy"]


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
