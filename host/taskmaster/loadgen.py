"""Load generators for `taskmaster bench`: keep-alive HTTP clients cheap enough that the
bench measures the API rather than itself (httpx spends more per request than the API).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence


class _KeepAliveClient(asyncio.Protocol):
    """Sends one request, reads its response, sends the next, until the deadline."""

    def __init__(self, request: bytes, deadline: float, timings: list[float],
                 done: asyncio.Future[int]) -> None:
        self.request = request
        self.deadline = deadline
        self.timings = timings
        self.done = done
        self.failures = 0
        self.buffer = b""
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end].decode("latin-1").lower()
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name == "content-length":
                length = int(value)
        if len(self.buffer) < head_end + 4 + length:
            return
        body = self.buffer[head_end + 4:head_end + 4 + length]
        self.buffer = self.buffer[head_end + 4 + length:]
        if head.startswith("http/1.1 200") and b'"errors"' not in body:
            self.timings.append(time.perf_counter() - self.sent)
        else:
            self.failures += 1
        if time.perf_counter() < self.deadline:
            self._send()
        elif self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.failures)


async def post_load(host: str, port: int, path: str, body: bytes, *, clients: int,
                    seconds: float) -> tuple[list[float], int, float]:
    """`clients` keep-alive connections POSTing `body` back to back for `seconds`.

    Returns the latencies of the successful requests, the failures, and the elapsed time.
    """
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    loop = asyncio.get_running_loop()
    timings: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    done = [loop.create_future() for _ in range(clients)]
    for future in done:
        client = _KeepAliveClient(request, deadline, timings, future)
        await loop.create_connection(lambda client=client: client, host, port)  # type: ignore[misc]
    failures = sum(await asyncio.gather(*done))
    return timings, failures, time.perf_counter() - started


async def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    """Until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


def percentile(values: Sequence[float], q: float) -> float:
    """Of sorted values; NaN for none."""
    return float(values[min(len(values) - 1, int(q * len(values)))]) if values else float("nan")
