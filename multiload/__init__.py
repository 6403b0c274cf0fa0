"""multiload: stream HDF5 datasets into Python as fast as the machine reads.

Native worker threads read a dataset with io_uring (or pread), decode
compressed chunks in parallel and hand each block to Python as a zero-copy
numpy view. The API is a drop-in superset of ``multitables``::

    import multiload as multitables

    stream = multitables.Streamer("data.h5")
    for guard in stream.get_queue("/images", n_procs=2).iter():
        with guard as block:
            train_step(block)

See docs/streamer.md for the guide.
"""

from ._signals import (
    FileChangedError,
    LoaderDiedError,
    OutOfMemoryError,
    QueueClosed,
    QueueClosedException,
    QueueClosedType,
    SharedMemoryError,
    SlowPathWarning,
    SubprocessException,
)
from .streamer import Queue, Streamer, io_mode
from . import dataset, dataset_ops, request, stage
from .reader import Reader, RequestPool
from .order import Order
from .batch import BatchStream
from .array import Array, close_all
from .loader_process import LoaderProcess, LoaderQueue
from .file_loader import FileLoader, FileRequest
from .writer import BlockError, WriteError, Writer, WriterDataset
from .budget import Budget

__version__ = "0.1.0"

__all__ = [
    "Writer",
    "WriterDataset",
    "WriteError",
    "BlockError",
    "Streamer",
    "Queue",
    "Reader",
    "RequestPool",
    "Order",
    "BatchStream",
    "Array",
    "close_all",
    "LoaderProcess",
    "LoaderQueue",
    "LoaderDiedError",
    "FileLoader",
    "FileRequest",
    "Budget",
    "dataset_ops",
    "QueueClosed",
    "QueueClosedType",
    "QueueClosedException",
    "SubprocessException",
    "SharedMemoryError",
    "OutOfMemoryError",
    "SlowPathWarning",
    "FileChangedError",
    "io_mode",
    "__version__",
]
