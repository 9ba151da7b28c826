"""A TCP proxy that delays each direction, to turn loopback into a network with a round trip.

Every chunk is forwarded ``delay`` seconds after it arrived, in order, without holding back
the chunks behind it (a link's latency, not its bandwidth). Runs in its own process so the
driver's CPU does not distort the timing; prints ``READY <port>``.

    python -m bench.proxy --target 127.0.0.1:2525 --delay 0.010
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

_CHUNK = 65536

try:  # uvloop's timers and sockets cost less: the proxy's own delay stays closer to --delay
    from uvloop import run
except ImportError:
    from asyncio import run


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward ``reader`` to ``writer``, each chunk ``delay`` seconds after it was read."""
    in_flight: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await in_flight.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.create_task(deliver())
    try:
        while data := await reader.read(_CHUNK):
            in_flight.put_nowait((time.monotonic() + delay, data))
    except OSError:
        pass
    in_flight.put_nowait((time.monotonic() + delay, b""))
    with contextlib.suppress(OSError):
        await sender


async def serve(target_host: str, target_port: int, delay: float, port: int = 0) -> None:
    async def connect(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter):
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _pump(client_reader, server_writer, delay),
            _pump(server_reader, client_writer, delay),
        )
        for writer in (client_writer, server_writer):
            writer.close()

    server = await asyncio.start_server(connect, "127.0.0.1", port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--delay", type=float, default=0.010, help="seconds, each direction")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(host, int(port), args.delay, args.port))


if __name__ == "__main__":
    main()
