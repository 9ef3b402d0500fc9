"""Connect to a Dask scheduler, or fail within seconds with one line saying why.

``dask.distributed.Client(address)`` trusts whatever listens at ``address``: it sends its
handshake and waits for the peer's with no deadline, so a web server (which waits for a
request line) hangs it forever, and one that answers reads ``b"HTTP/1.0"`` as a frame length
of 3 EiB. :func:`connect` first talks to a ``tcp://`` address itself, over a plain socket
with one deadline for everything (name lookup included): the peer must send the Dask comm
handshake (a Dask server speaks first), and answer ``identity`` as a ``Scheduler``. Only then
is the address handed to ``Client``. Other schemes (``tls://``, ``ws://``, ...) go to
``Client`` directly, with its own timeout.

>>> probe_scheduler("tcp://127.0.0.1:1", timeout=2.0)  # nothing listens on port 1
Traceback (most recent call last):
...
klest.engine.dask_connect.SchedulerError: not a Dask scheduler at tcp://127.0.0.1:1: ...
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DEFAULT_TIMEOUT", "SchedulerError", "connect", "probe_scheduler"]

#: seconds allowed to reach the address, read the Dask handshake and the scheduler's identity
#: (a scheduler sends its handshake at once; with the CLI's start-up, errors come in ~10 s)
DEFAULT_TIMEOUT = 8.0
#: a handshake or an identity reply is a few hundred bytes; a larger frame is not Dask's
_MAX_MESSAGE_BYTES = 64 << 20
_LENGTH = struct.Struct("Q")  # Dask's TCP framing: native unsigned 64-bit lengths


class SchedulerError(Exception):
    """The address is not a reachable Dask scheduler (the message is one line)."""


class _NotDask(Exception):
    """The peer answered, but not as a Dask scheduler: the reason, for the message."""


def _split(address: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a Dask address; host:port means tcp://host:port."""
    scheme, sep, location = address.strip().rpartition("://")
    scheme = scheme.lower() if sep else "tcp"
    if scheme != "tcp":
        return scheme, location, None
    try:
        parts = urlsplit("//" + location)
        host, port = parts.hostname, parts.port
    except ValueError as err:
        raise SchedulerError(f"cannot connect to the Dask scheduler at {address}: {err}") from None
    if not host or port is None or parts.path or parts.query or parts.fragment:
        raise SchedulerError(
            f"cannot connect to the Dask scheduler at {address}: not an address of the form "
            "tcp://HOST:PORT"
        )
    return scheme, host, port


class _Peer:
    """A plain socket reading and writing Dask's framed messages, all before one deadline."""

    def __init__(self, host: str, port: int, deadline: float, stage: list[str]) -> None:
        self.deadline = deadline
        started = time.monotonic()
        try:
            stage.append("resolving")  # name lookup has no timeout: the caller's deadline
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            stage.append("connecting")
            for number, (family, kind, proto, _, where) in enumerate(found, 1):
                self.sock = socket.socket(family, kind, proto)
                try:
                    self.sock.settimeout(self._left())
                    self.sock.connect(where)
                    break
                except OSError:
                    self.sock.close()
                    if number == len(found):
                        raise
            stage.append("handshake")
        except socket.gaierror as err:
            raise _NotDask(f"cannot resolve host {host!r} ({err.strerror})") from None
        except ConnectionRefusedError:
            raise _NotDask("connection refused") from None
        except TimeoutError:
            raise _NotDask(f"no connection within {deadline - started:.3g} s") from None
        except OSError as err:
            raise _NotDask(err.strerror or str(err)) from None

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def _read_exactly(self, count: int) -> bytes:
        chunks, got = [], 0
        while got < count:
            self.sock.settimeout(self._left())
            chunk = self.sock.recv(min(count - got, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def read(self) -> Any:
        """One message, decoded; _NotDask if the bytes are not Dask's framing."""
        # deferred: distributed (the optional dask extra) is imported only when Dask is used
        from distributed.protocol import loads
        from distributed.protocol.utils import unpack_frames

        head = self._read_exactly(_LENGTH.size)
        (length,) = _LENGTH.unpack(head)
        if not 0 < length <= _MAX_MESSAGE_BYTES:
            raise _NotDask(f"it answered {head!r}, which is not the Dask protocol")
        body = self._read_exactly(length)
        try:
            frames, missing = unpack_frames(body, partial=True)
            if sum(missing) > _MAX_MESSAGE_BYTES:
                raise ValueError("frames too long")
            frames = [*frames, *(self._read_exactly(size) for size in missing)]
            return loads(frames, deserialize=False)  # plain msgpack: never unpickle
        except (TimeoutError, EOFError):
            raise
        except Exception:  # struct, msgpack, decompression or pickle errors alike
            raise _NotDask(f"it answered {head + body[:24]!r}..., not the Dask protocol") from None

    def write(self, message: dict[str, Any]) -> None:
        # deferred: distributed (the optional dask extra) is imported only when Dask is used
        from distributed.protocol import dumps
        from distributed.protocol.utils import pack_frames

        packed = pack_frames(dumps(message))
        self.sock.settimeout(self._left())
        self.sock.sendall(_LENGTH.pack(len(packed)) + packed)

    def close(self) -> None:
        self.sock.close()


def _identity(host: str, port: int, timeout: float, stage: list[str]) -> dict[str, Any]:
    """The peer's answer to Dask's ``identity`` request, after the comm handshake."""
    # deferred: distributed (the optional dask extra) is imported only when Dask is used
    from distributed.protocol.pickle import HIGHEST_PROTOCOL

    peer = _Peer(host, port, time.monotonic() + timeout, stage)
    try:
        try:
            handshake = peer.read()  # a Dask server sends its handshake first
        except TimeoutError:
            raise _NotDask(
                f"connected, but no Dask handshake came within {timeout:g} s "
                "(another kind of server?)"
            ) from None
        except EOFError:
            raise _NotDask("it closed the connection without a Dask handshake") from None
        except OSError as err:
            raise _NotDask(f"the connection failed: {err.strerror or err}") from None
        if not isinstance(handshake, dict) or "pickle-protocol" not in handshake:
            raise _NotDask("its first message is not a Dask handshake")
        try:
            peer.write(
                {
                    "compression": None,
                    "python": tuple(sys.version_info)[:3],
                    "pickle-protocol": HIGHEST_PROTOCOL,
                }
            )
            peer.write({"op": "identity", "reply": True})
            identity = peer.read()
            peer.write({"op": "close", "reply": False})
        except TimeoutError:
            raise _NotDask("it sent a Dask handshake but did not answer 'identity'") from None
        except (EOFError, OSError):
            raise _NotDask("it sent a Dask handshake, then closed the connection") from None
    finally:
        peer.close()
    kind = identity.get("type") if isinstance(identity, dict) else None
    if kind != "Scheduler":
        what = f"a Dask {kind}" if isinstance(kind, str) else "a Dask server"
        raise _NotDask(f"it is {what}, not a scheduler")
    return identity


def probe_scheduler(address: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any] | None:
    """The identity of the Dask scheduler at a ``tcp://`` address, within ``timeout`` seconds.

    Raises :class:`SchedulerError` with one line ("not a Dask scheduler at ADDRESS: why")
    for a closed port, an unknown host, a server that never answers, answers something else
    than Dask's protocol, or is a Dask worker. Returns None, without connecting, for other
    schemes (they need Dask's security settings). The work runs in a daemon thread, so not
    even a name lookup that hangs can keep the caller past the deadline.

    >>> probe_scheduler("tls://127.0.0.1:8786") is None  # not probed: Client checks it
    True
    >>> probe_scheduler("127.0.0.1")
    Traceback (most recent call last):
    ...
    klest.engine.dask_connect.SchedulerError: cannot connect to the Dask scheduler at ...
    """
    scheme, host, port = _split(address)
    if scheme != "tcp" or port is None:
        return None
    outcome: list[Any] = []
    stage: list[str] = ["starting"]

    def work() -> None:
        try:
            outcome.append(_identity(host, port, timeout, stage))
        except BaseException as err:  # handed to the caller's thread
            outcome.append(err)

    worker = threading.Thread(target=work, name="klest-dask-probe", daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome:
        where = f"cannot resolve host {host!r}" if stage[-1] == "resolving" else "no answer"
        raise SchedulerError(f"not a Dask scheduler at {address}: {where} within {timeout:g} s")
    result = outcome[0]
    if isinstance(result, _NotDask):
        raise SchedulerError(f"not a Dask scheduler at {address}: {result}")
    if isinstance(result, BaseException):
        raise SchedulerError(f"not a Dask scheduler at {address}: {result!r}")
    return result


def connect(address: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """A ``dask.distributed.Client`` for the scheduler at ``address``, or SchedulerError.

    ``tcp://`` addresses are probed first (:func:`probe_scheduler`); once the peer has
    answered as a scheduler, ``Client`` gets ``timeout`` seconds of its own. ImportError if
    dask.distributed is not installed.

    >>> connect("tcp://127.0.0.1:1", timeout=2.0)
    Traceback (most recent call last):
    ...
    klest.engine.dask_connect.SchedulerError: not a Dask scheduler at tcp://127.0.0.1:1: ...
    """
    # deferred: distributed (the optional dask extra) is imported only when Dask is used
    from dask.distributed import Client

    probe_scheduler(address, timeout)
    try:
        return Client(address, timeout=f"{timeout:g}s")
    except (OSError, TimeoutError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SchedulerError(
            f"cannot connect to the Dask scheduler at {address}: {reason}"
        ) from None
