"""The driver's end of a local worker's socket: reads that never wait, sends that wait a bounded time.

Why not `multiprocessing.connection.Connection.recv` in the driver: it reads a whole message before
it returns, so a worker frozen (SIGSTOP, a debugger, a full disk on its side) half-way through
sending a result held the driver in that read for good, and neither `--job-timeout` nor a first
Ctrl-C could act. Here each read takes only the bytes already there into a per-worker buffer, and a
message is handed out once it is complete; a worker whose message never completes is a job that
sends nothing, which `--job-timeout` stops like any other hung job.

The worker keeps its `Connection` (blocking is right there): this end reads and writes the same
frames, a 4-byte big-endian signed length then the pickle, or -1 then an 8-byte unsigned length for
messages over 2 GiB (`Connection._send_bytes` since Python 3.8; tests/test_local22_protocol.py
holds the two ends to it).
"""

from __future__ import annotations

import pickle
import select
import socket
import struct
import time
from typing import Any

#: Seconds a send may wait for a worker to take the bytes (a job message is a few KB on an idle worker).
SEND_TIMEOUT_S = 30.0
#: Bytes asked for per read.
READ_CHUNK = 1 << 20
_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")


class ProtocolError(OSError):
    """A frame no `Connection` writes (a negative length): the stream cannot be trusted any more."""


class Channel:
    """Non-blocking framed messages over a connected stream socket (`fileno` serves `wait`)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.buffer = bytearray()
        self.eof = False  # the other end closed (or reset) the stream

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send(self, obj: Any, timeout: float = SEND_TIMEOUT_S) -> None:
        """Send one message; OSError if the worker is gone, TimeoutError if it took none within `timeout`."""
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        head = _SHORT.pack(len(data)) if len(data) <= 0x7FFFFFFF else _SHORT.pack(-1) + _LONG.pack(len(data))
        view, deadline = memoryview(head + data), time.monotonic() + timeout
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [self.sock], [], left)[1]:
                    raise TimeoutError(f"the worker took no data for {timeout:g} s") from None

    def poll(self, timeout: float = 0.0) -> bool:
        """Whether `recv` has something to say now: a complete message, or the end of the stream.
        Reads what has arrived without waiting (`timeout` is accepted for `Connection`'s signature)."""
        self._pull()
        return self.ready()

    def ready(self) -> bool:
        """Whether `recv` has something to say without reading: a complete message buffered, the end of
        the stream, or a corrupt frame (which `recv` raises)."""
        try:
            return self.eof or self._frame() is not None
        except ProtocolError:
            return True

    def recv(self) -> Any:
        """The next complete message, unpickled; EOFError when there is none (a message cut short by the
        end of the stream, or none there at all: callers ask after `poll` or once the worker is dead);
        an unpicklable message raises its error, and the stream goes on after it."""
        self._pull()
        frame = self._frame()
        if frame is None:
            raise EOFError("no complete message from the worker")
        start, end = frame
        payload = bytes(self.buffer[start:end])
        del self.buffer[:end]
        return pickle.loads(payload)

    def partial(self) -> bool:
        """Whether part of a message has arrived and the rest not (yet)."""
        try:
            return bool(self.buffer) and self._frame() is None
        except ProtocolError:
            return False

    def _pull(self) -> None:
        """Take every byte that has arrived, without waiting for more."""
        while not self.eof:
            try:
                chunk = self.sock.recv(READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:  # reset by a worker that died with unread data: the end of its stream too
                chunk = b""
            self.eof = not chunk
            self.buffer += chunk

    def _frame(self) -> tuple[int, int] | None:
        """(start, end) of the first complete message in the buffer, or None."""
        if len(self.buffer) < _SHORT.size:
            return None
        (size,) = _SHORT.unpack_from(self.buffer)
        start = _SHORT.size
        if size == -1:
            if len(self.buffer) < _SHORT.size + _LONG.size:
                return None
            (size,) = _LONG.unpack_from(self.buffer, _SHORT.size)
            start += _LONG.size
        elif size < 0:
            raise ProtocolError(f"a message of length {size} from the worker: its stream is corrupt")
        return (start, start + size) if len(self.buffer) >= start + size else None
