"""The loader process's side of :class:`multiload.LoaderProcess`.

One process serves several consumer processes. It listens on an abstract
Unix socket (a name in the kernel, not a file: nothing to go stale after
any exit) guarded by multiprocessing's HMAC challenge with a random key.
Each connection is one consumer's *lease*:

1. the consumer sends ``("connect", {...})``: its id, pid, file, dataset and
   get_queue() options;
2. the loader opens a Streamer queue whose ring is one sealed memfd
   (``shared=True``), replies ``("ok", meta)`` (dtype, shapes, schedule
   parameters, warnings raised while opening) and sends the memfd with
   SCM_RIGHTS; the consumer maps it and takes blocks from it directly,
   under its own owner ids: the loader sees neither takes nor releases;
3. the connection then carries only ``("stats",)`` and ``("close",)``
   (answered once the lease is free, so the id can connect again at once).
   Its end -- a close, or the consumer process dying (kill -9 included) --
   closes the queue: the stream's workers stop and the ring, with every slot the
   consumer held, goes when the loader's reference does. The other
   consumers' streams are untouched.

One thread per connection (blocked in recv, so idle leases cost nothing),
one accepting, and the main thread waiting (select) for the end: the
owner's ``("shutdown",)``, or the owner process exiting (a pidfd), after
which every queue is closed -- consumers then see the end of their stream,
or, if the loader died instead, a hang-up on their connection
(remote_stream_type.c) -- and the process exits. SIGINT is ignored: a
terminal's Ctrl-C reaches the whole process group, and the consumers and the
owner drain and close the loader themselves.
"""

import os
import select
import signal
import socket
import struct
import threading
import warnings
from multiprocessing import connection, reduction

# Exit code of a loader that stopped because its owner process exited first.
EXIT_OWNER_GONE = 75

# Seconds a new connection has to pass the key challenge: a peer that
# connects and stays silent costs one session thread that long, never the
# accepting thread.
HANDSHAKE_SECONDS = 10


class _Server:
    def __init__(self, address, authkey, owner_pid, n_procs):
        self._address = address
        self._authkey = authkey
        self._owner_pid = owner_pid
        self._n_procs = n_procs
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(address)  # abstract: a leading NUL, no file
        self._sock.listen(64)
        self._lock = threading.Lock()
        self._sessions = {}      # consumer id -> (pid, queue or None)
        self._streamers = {}     # filename -> Streamer
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        self.owner_gone = False

    # -- the end ------------------------------------------------------------

    def run(self):
        """Serve until shutdown or the owner's exit; then close every queue."""
        accept = threading.Thread(target=self._accept_loop, name="multiload-loader-accept", daemon=True)
        accept.start()
        waits = [self._wake_r]
        pidfd, poll_owner = -1, None
        if self._owner_pid != os.getpid():
            try:
                pidfd = os.pidfd_open(self._owner_pid)
                waits.append(pidfd)
            except ProcessLookupError:
                self.owner_gone = True
            except OSError:  # no pidfds (Linux < 5.3): look at the owner once a second instead
                poll_owner = 1.0
        try:
            while not self.owner_gone:
                ready, _, _ = select.select(waits, [], [], poll_owner)
                if pidfd in ready or (poll_owner and not ready and not _alive(self._owner_pid)):
                    self.owner_gone = True
                if self._wake_r in ready:
                    break
        finally:
            self._shutdown()
            if pidfd >= 0:
                os.close(pidfd)
        accept.join(timeout=5)
        with self._lock:  # a late session's stop() must not write to a reused descriptor
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_w = -1

    def stop(self):
        with self._lock:
            if self._wake_w >= 0:
                os.write(self._wake_w, b"x")

    def _shutdown(self):
        with self._lock:
            self._stopping = True
            queues = [q for _, q in self._sessions.values() if q is not None]
        for q in queues:
            q.close()  # the consumers see the end of their streams
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (EINVAL)
        except OSError:
            pass
        self._sock.close()
        for s in self._streamers.values():
            s.close()

    # -- connections ----------------------------------------------------------

    def _accept_loop(self):
        while not self._stopping:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                if self._stopping:
                    return
                continue
            threading.Thread(target=self._session, args=(sock,), name="multiload-loader-session",
                             daemon=True).start()

    def _session(self, sock):
        """One connection: the key challenge, then one request."""
        try:
            conn = _handshake(sock, self._authkey, server=True)
        except (connection.AuthenticationError, EOFError, OSError):
            return  # a peer without the key, a silent one, or one that hung up
        try:
            msg = conn.recv()
            op = msg[0]
            if op == "shutdown":
                conn.send(("ok",))
                self.stop()
            elif op == "ping":
                conn.send(("ok", os.getpid()))
            elif op == "connect":
                self._serve_consumer(conn, msg[1])
            else:
                conn.send(("error", ValueError(f"unknown loader request {op!r}")))
        except (EOFError, OSError):
            pass  # the peer went away
        finally:
            conn.close()

    def _streamer(self, filename):
        from .streamer import Streamer
        with self._lock:
            s = self._streamers.get(filename)
            if s is None:
                s = self._streamers[filename] = Streamer(filename)
            return s

    def _serve_consumer(self, conn, req):
        cid = req["consumer_id"]
        with self._lock:
            if self._stopping:
                conn.send(("error", RuntimeError("the loader process is shutting down")))
                return
            if cid in self._sessions:
                pid = self._sessions[cid][0]
                conn.send(("error", ValueError(
                    f"consumer id {cid!r} is already connected (process {pid}); each consumer "
                    "holds its id until its queue is closed or its process exits")))
                return
            self._sessions[cid] = (req["pid"], None)
        queue = None
        closing = False
        try:
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    options = dict(req["options"])
                    options.setdefault("n_procs", self._n_procs)
                    queue = self._streamer(req["filename"])._make_queue(req["path"], shared=True, **options)
            except Exception as e:
                _send_error(conn, e)
                return
            with self._lock:
                if self._stopping:
                    queue.close()
                    conn.send(("error", RuntimeError("the loader process is shutting down")))
                    return
                self._sessions[cid] = (req["pid"], queue)
            conn.send(("ok", _meta(queue, caught)))
            if queue._stream is not None:
                reduction.send_handle(conn, queue._stream.ring_fd(), req["pid"])
            while True:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    return  # the consumer died (or hung up): its lease ends
                if msg[0] == "stats":
                    conn.send(("ok", queue.stats()))
                elif msg[0] == "close":
                    closing = True
                    return
        finally:
            if queue is not None:
                queue.close()
            with self._lock:
                self._sessions.pop(cid, None)
            if closing:  # the lease is free: the consumer may connect with its id again at once
                try:
                    conn.send(("ok",))
                except OSError:
                    pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _handshake(sock, authkey, server):
    """multiprocessing's key challenge both ways on a connected socket
    (taken over), as its Listener and Client do it -- but with every read
    bounded by HANDSHAKE_SECONDS, so a silent or stuck peer cannot hold
    either side. Returns the Connection."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", HANDSHAKE_SECONDS, 0))
    conn = connection.Connection(sock.detach())
    try:
        if server:
            connection.deliver_challenge(conn, authkey)
            connection.answer_challenge(conn, authkey)
        else:
            connection.answer_challenge(conn, authkey)
            connection.deliver_challenge(conn, authkey)
        with socket.socket(fileno=os.dup(conn.fileno())) as s:  # the same socket: reads block again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 0))
    except BaseException:
        conn.close()
        raise
    return conn


def dial(address, authkey):
    """Connect to a loader and pass its key challenge. Returns the
    Connection; ConnectionRefusedError when nothing listens there,
    AuthenticationError or OSError when the handshake fails."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return _handshake(sock, authkey, server=False)


def _send_error(conn, exc):
    try:
        conn.send(("error", exc))
    except Exception:  # an exception that does not pickle travels as its text
        conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _meta(queue, caught):
    """What the consumer needs to rebuild the queue around the shared ring."""
    layout = queue._layout
    stream = queue._stream
    return {
        "loader_pid": os.getpid(),
        "dtype": layout.dtype,
        "shape": tuple(layout.shape),
        "row_bytes": layout.row_bytes,
        "block_size": queue.block_size,
        "n_blocks": queue.n_blocks,
        "read_ahead": queue.read_ahead,
        "cyclic": queue.cyclic,
        "ordered": queue.ordered,
        "field": queue.field,
        "shuffle": queue.shuffle,
        "seed": queue.seed,
        "epoch": queue.epoch,
        "rank": queue.rank,
        "world_size": queue.world_size,
        "remainder": queue._remainder,
        "empty": stream is None,
        "warnings": [(w.category, str(w.message)) for w in caught],
    }


def serve(address, authkey, owner_pid, n_procs, ready=None):
    """Run a loader in this process until it is shut down or its owner exits.

    ``ready``: a connection to report ``("ready", pid)`` or ``("error", exc)``
    on (spawn_loader's handshake). Returns True when the owner's exit ended it.
    """
    try:
        server = _Server(address, authkey, owner_pid, n_procs)
    except BaseException as e:
        if ready is None:
            raise
        _send_error(ready, e)
        ready.close()
        return False
    if ready is not None:
        ready.send(("ready", os.getpid()))
        ready.close()
    server.run()
    return server.owner_gone


def main(address, authkey, owner_pid, n_procs, ready):
    """The loader process's entry point (spawn_loader)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if serve(address, authkey, owner_pid, n_procs, ready):
        os._exit(EXIT_OWNER_GONE)
