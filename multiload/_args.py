"""Argument checks shared by the front ends: clear ValueErrors up front."""

import numbers


#: Largest count the core takes for threads and slots (a C unsigned int):
#: larger values would wrap around silently.
UINT_MAX = 2**32 - 1


def positive_int(name, value, default=None, maximum=None):
    """Return value as an int >= 1 (or default when value is None), and at
    most `maximum` when one is given."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


# ------------------------------------------------ PyTables open_file options

#: tables.open_file's named parameters besides ``filename``.
OPEN_FILE_ARGS = ("mode", "title", "root_uep", "filters")

#: PyTables' parameters (``tables/parameters.py``, PyTables 3.11): open_file
#: takes each as a keyword argument, in any case (it upper-cases them).
PYTABLES_PARAMETERS = frozenset("""
    ALLOW_PADDING BOUNDS_MAX_SIZE BOUNDS_MAX_SLOTS BUFFER_TIMES CHUNK_CACHE_NELMTS
    CHUNK_CACHE_PREEMPT CHUNK_CACHE_SIZE COND_CACHE_SLOTS DISABLE_EVERY_CYCLES DRIVER
    DRIVER_CORE_BACKING_STORE DRIVER_CORE_IMAGE DRIVER_CORE_INCREMENT DRIVER_DIRECT_ALIGNMENT
    DRIVER_DIRECT_BLOCK_SIZE DRIVER_DIRECT_CBUF_SIZE DRIVER_SPLIT_META_EXT DRIVER_SPLIT_RAW_EXT
    ENABLE_EVERY_CYCLES EXPECTED_ROWS_EARRAY EXPECTED_ROWS_TABLE EXPECTED_ROWS_VLARRAY
    IO_BUFFER_SIZE ITERSEQ_MAX_ELEMENTS ITERSEQ_MAX_SIZE ITERSEQ_MAX_SLOTS LIMBOUNDS_MAX_SIZE
    LIMBOUNDS_MAX_SLOTS LOWEST_HIT_RATIO MAX_BLOSC_THREADS MAX_COLUMNS MAX_GROUP_WIDTH
    MAX_NODE_ATTRS MAX_NUMEXPR_THREADS MAX_TREE_DEPTH MAX_UNDO_PATH_LENGTH METADATA_CACHE_SIZE
    NODE_CACHE_SLOTS PYTABLES_SYS_ATTRS SORTEDLR_MAX_SIZE SORTEDLR_MAX_SLOTS SORTED_MAX_SIZE
    TABLE_MAX_SIZE USER_BLOCK_SIZE
""".split())

#: HDF5 drivers that read the one named file byte for byte as multiload does
#: (H5FD_DIRECT too: the Streamer maps it to ``direct=True``). The others
#: (H5FD_SPLIT, H5FD_FAMILY, H5FD_MULTI) spread a file over several files.
SINGLE_FILE_DRIVERS = frozenset({"H5FD_SEC2", "H5FD_DIRECT", "H5FD_WINDOWS", "H5FD_STDIO",
                                 "H5FD_CORE", "H5FD_LOG", "H5FD_MPIO", "H5FD_MPIPOSIX"})


def open_file_options(owner, kw_args, hints=None):
    """Check the keyword arguments a Streamer or Reader passes on, as
    multitables did, to PyTables' ``open_file``; return whether they ask for
    O_DIRECT (``DRIVER='H5FD_DIRECT'``).

    Every name open_file takes is accepted: ``mode`` (``'r'`` only: multiload
    reads), ``title``, ``root_uep`` (``'/'`` only), ``filters`` and PyTables'
    parameters in any case (``driver``, ``node_cache_slots``, ...). Those
    that change nothing for a native read-only reader are ignored; those that
    would change what is read and that multiload cannot honour raise
    ValueError. Any other name raises TypeError as Python does for an
    unexpected keyword argument, with a hint when the name is a close
    misspelling of one of ``hints`` (the owner's own parameters) or belongs
    elsewhere (``hints``: see :func:`_hint`).
    """
    direct = False
    for name, value in kw_args.items():
        if name in OPEN_FILE_ARGS:
            if name == "mode" and value != "r":
                raise ValueError(f"{owner}(): mode={value!r}: multiload opens files read-only "
                                 "(mode='r')")
            if name == "root_uep" and value not in ("/", ""):
                raise ValueError(f"{owner}(): root_uep={value!r} is not supported: give dataset "
                                 "paths from the file's root group '/'")
            continue
        key = name.upper()
        if key not in PYTABLES_PARAMETERS:
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}"
                            + _hint(name, hints or {}))
        if key == "DRIVER" and value is not None:
            if not isinstance(value, str) or value not in SINGLE_FILE_DRIVERS:
                raise ValueError(f"{owner}(): {name}={value!r} is not supported: multiload reads "
                                 "one ordinary HDF5 file (drivers "
                                 + ", ".join(sorted(SINGLE_FILE_DRIVERS)) + ")")
            direct = value == "H5FD_DIRECT"
        elif key == "DRIVER_CORE_IMAGE" and value is not None:
            raise ValueError(f"{owner}(): {name} is not supported: multiload reads "
                             "the file named, not an image in memory")
    return direct


def _hint(name, hints):
    """A hint for an unexpected keyword argument, or ''.

    ``hints`` maps parameter names to where they belong: ``""`` for the owner
    itself, else a call such as ``"Streamer.get_queue()"``.
    """
    import difflib

    if hints.get(name):
        return f" ({name!r} is an argument of {hints[name]})"
    close = difflib.get_close_matches(name, list(hints), n=1)
    if not close:
        return ""
    where = hints[close[0]]
    return f" (did you mean {close[0]!r}" + (f" of {where}" if where else "") + "?)"
