"""A small HTTP proxy on loopback between the object-storage client and the S3 server, for fault
tests and for counting requests.

Each request the client sends is read whole (headers and ``Content-Length`` body), passed to a
*rule* that may return a fault, and otherwise forwarded to the server on a connection of its own;
the server's answer goes back on the client's kept-alive connection.  Faults:

* ``"503"``: answer ``503 SlowDown`` (S3's throttling) without forwarding;
* ``"403"``: answer ``403 InvalidAccessKeyId`` (S3's answer to wrong credentials);
* ``"reset-mid-body"``: read the headers and half the body, then reset the connection (the
  request never reaches the server: a client killed, or a network cut, mid-upload);
* ``"lose-answer"``: forward the request, then reset the connection instead of answering (the
  server did the work; the client does not know);
* ``"stall"``: wait :attr:`FaultProxy.stall_seconds` before forwarding (a slow or hung server);
* ``"down"``: reset the connection at once (the server is gone).

Every request is recorded in :attr:`FaultProxy.requests` as ``(method, path, body bytes)``, and
the access key id it was signed with in :attr:`FaultProxy.access_keys`; the bytes of the answers
passed back are summed in :attr:`FaultProxy.answer_bytes`.
"""

from __future__ import annotations

import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

Rule = Callable[[str, str], "str | None"]

_SLOWDOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s"
)
_SLOWDOWN_BODY = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>'
_DENIED = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s"
_DENIED_BODY = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>'


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset rather than an orderly shutdown."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _read_head(sock: socket.socket, buffer: bytearray) -> bytes | None:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    del buffer[:end]
    return head


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


class FaultProxy:
    """The proxy; ``endpoint`` is what the client is given instead of the server's."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rule: Rule = lambda method, path: None
        self.stall_seconds = 1.0
        self.requests: list[tuple[str, str, int]] = []
        self.answer_bytes = 0  # the bytes of every answer passed back, headers included
        self.access_keys: set[str] = set()  # the key ids requests were signed with
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fail(
        self,
        fault: str,
        *,
        times: int | None = None,
        when: Callable[[str, str], bool] | None = None,
    ) -> None:
        """Apply ``fault`` to requests matching ``when`` (all by default), ``times`` times (always
        by default)."""
        left = [times]

        def rule(method: str, path: str) -> str | None:
            if when is not None and not when(method, path):
                return None
            with self._lock:
                if left[0] is not None:
                    if left[0] <= 0:
                        return None
                    left[0] -= 1
            return fault

        self.rule = rule

    def heal(self) -> None:
        self.rule = lambda method, path: None

    def count(self, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, _, _ in self.requests if method is None or m == method)

    def body_bytes(self, method: str | None = None) -> int:
        with self._lock:
            return sum(n for m, _, n in self.requests if method is None or m == method)

    def _serve(self, client: socket.socket) -> None:
        buffer = bytearray()
        try:
            while True:
                head = _read_head(client, buffer)
                if head is None:
                    return
                method, path = head.split(b" ", 2)[:2]
                length = _content_length(head)
                fault = self.rule(method.decode(), path.decode())
                if fault == "down":
                    _reset(client)
                    return
                if fault == "reset-mid-body" and length > 1:
                    while len(buffer) < length // 2:
                        chunk = client.recv(65536)
                        if not chunk:
                            break
                        buffer += chunk
                    _reset(client)
                    return
                while len(buffer) < length:
                    chunk = client.recv(min(1 << 20, length - len(buffer)) or 1)
                    if not chunk:
                        return
                    buffer += chunk
                body = bytes(buffer[:length])
                del buffer[:length]
                with self._lock:
                    self.requests.append((method.decode(), path.decode(), length))
                    signed = re.search(rb"Credential=([A-Za-z0-9]+)/", head)
                    if signed:
                        self.access_keys.add(signed.group(1).decode())
                if fault == "503":
                    client.sendall(_SLOWDOWN % (len(_SLOWDOWN_BODY), _SLOWDOWN_BODY))
                    continue
                if fault == "403":
                    client.sendall(_DENIED % (len(_DENIED_BODY), _DENIED_BODY))
                    continue
                if fault == "stall":
                    time.sleep(self.stall_seconds)
                answer = self._forward(head, body, method == b"HEAD")
                with self._lock:
                    self.answer_bytes += 0 if answer is None else len(answer)
                if fault == "lose-answer" or answer is None:
                    _reset(client)
                    return
                client.sendall(answer)
        except OSError:
            _reset(client)

    def _forward(self, head: bytes, body: bytes, is_head: bool) -> bytes | None:
        """Send one request to the server on a new connection; its whole answer, framed with a
        ``Content-Length`` so that the client's connection can be kept alive."""
        lines = [
            line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")
        ]
        request = b"\r\n".join(lines[:-2]) + b"\r\nConnection: close\r\n\r\n" + body
        with socket.create_connection(self.upstream) as upstream:
            upstream.sendall(request)
            chunks = []
            while chunk := upstream.recv(1 << 20):
                chunks.append(chunk)
        answer = b"".join(chunks)
        end = answer.find(b"\r\n\r\n")
        if end < 0:
            return None
        answer_head, answer_body = answer[: end + 4], answer[end + 4 :]
        lower = answer_head.lower()
        if (
            b"\r\ncontent-length:" not in lower
            and b"\r\ntransfer-encoding:" not in lower
            and not is_head
        ):
            answer_head = answer_head[:-2] + b"Content-Length: %d\r\n\r\n" % len(answer_body)
        answer_head = b"\r\n".join(
            line
            for line in answer_head.split(b"\r\n")
            if not line.lower().startswith(b"connection:")
        )
        return answer_head + answer_body
