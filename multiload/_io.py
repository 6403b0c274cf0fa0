"""The user's ``io_mode`` strings, mapped once to the core's engine codes.

The Streamer (``get_queue(io_mode=...)``) and the Reader
(``Reader(io_mode=...)``) both accept these names; the core takes the
``_core.IO_*`` codes (src/source.h ``ml_io_mode``).
"""

from . import _core

#: io_mode argument -> engine code. None and 'auto': io_uring where the
#: kernel allows it, else pread (``MULTILOAD_IO`` overrides).
IO_MODES = {
    None: _core.IO_AUTO,
    "auto": _core.IO_AUTO,
    "io_uring": _core.IO_URING,
    "uring": _core.IO_URING,
    "pread": _core.IO_PREAD,
}


def io_mode_code(io_mode, accepted):
    """Return the ``_core.IO_*`` code of a user's ``io_mode``.

    Parameters
    ----------
    io_mode : str or None
        One of the keys of :data:`IO_MODES`.
    accepted : str
        How the caller's error message lists the names it documents, e.g.
        ``"'io_uring' or 'pread'"``.

    Raises
    ------
    ValueError
        ``io_mode must be <accepted>, got <io_mode!r>`` for any other value.
    TypeError
        For an unhashable value (as a dict lookup raises).
    """
    code = IO_MODES.get(io_mode)
    if code is None:
        raise ValueError(f"io_mode must be {accepted}, got {io_mode!r}")
    return code
