"""The grader's end of the socket to one child: framed messages, never a blocking send.

Requests are queued and written only when the socket can take them, while the
replies are read, so the grader and a child can never both block in `send()`
on full socket buffers (pipelining hundreds of small requests did exactly
that: a Unix socket charges about 1 KiB of buffer for each small message).
Every wait has a deadline, also a reply whose header came and whose body
never does, and a reply is refused before it is buffered when its header
announces more than the limit. The frames are those of
`multiprocessing.connection.Connection`, which the child uses at its end.
"""
from __future__ import annotations

import select
import socket
import struct
import time


class ChannelClosed(EOFError):
    """The child's end is closed (it ended)."""


class ChannelTimeout(TimeoutError):
    """No complete reply before the deadline."""


class MessageTooLarge(OSError):
    """A reply announced more bytes than the limit."""


def frame(payload: bytes) -> bytes:
    n = len(payload)
    return (struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!iQ", -1, n)) + payload


class Channel:
    def __init__(self, sock: socket.socket, *, limit: int):
        sock.setblocking(False)
        self.sock, self.limit = sock, limit
        self._out = bytearray()
        self._in = bytearray()
        self._peer_gone = False

    def queue(self, payload: bytes) -> None:
        """Send `payload` as soon as the child can take it (written while waiting for replies)."""
        if not self._peer_gone:
            self._out += frame(payload)
            self._write()

    def receive(self, deadline: float) -> bytes:
        """The next reply, by `deadline` (time.monotonic()); ChannelTimeout, ChannelClosed or MessageTooLarge."""
        while True:
            msg = self._take()
            if msg is not None:
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelTimeout()
            writing = [self.sock] if self._out else []
            try:
                readable, writable, _ = select.select([self.sock], writing, [], left)
            except InterruptedError:
                continue
            if writable:
                self._write()
            if readable:
                try:
                    data = self.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if not data:
                    raise ChannelClosed()
                self._in += data

    def _write(self) -> None:
        while self._out:
            try:
                sent = self.sock.send(self._out)
            except BlockingIOError:
                return
            except (BrokenPipeError, ConnectionResetError):
                self._peer_gone = True  # the reply (EOF) says what happened
                self._out.clear()
                return
            del self._out[:sent]

    def _take(self) -> bytes | None:
        if len(self._in) < 4:
            return None
        (size,) = struct.unpack("!i", self._in[:4])
        head = 4
        if size == -1:
            if len(self._in) < 12:
                return None
            (size,) = struct.unpack("!Q", self._in[4:12])
            head = 12
        if size < 0 or size > self.limit:
            raise MessageTooLarge(f"a reply of {size} bytes (the limit is {self.limit})")
        if len(self._in) < head + size:
            return None
        msg = bytes(self._in[head:head + size])
        del self._in[:head + size]
        return msg

    def close(self) -> None:
        self.sock.close()
