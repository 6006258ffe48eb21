"""Run the fake upstream as a process: `python -m tests.fakes --port N`.

Prints `listening on PORT` once the port is bound, then serves until SIGINT or SIGTERM.
Scripting and recordings are reachable over the `/_fake/` control API.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from tests.fakes.server import FakeUpstream


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: an ephemeral port)")
    parser.add_argument(
        "--max-records",
        type=int,
        default=1000,
        help="number of recent requests kept for inspection; 0 keeps none (default 1000)",
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level name (default WARNING)")
    return parser.parse_args(argv)


async def _serve(upstream: FakeUpstream) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, upstream.request_stop)
    await upstream.serve(on_ready=lambda port: print(f"listening on {port}", flush=True))


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(FakeUpstream(args.port, max_records=args.max_records)))


if __name__ == "__main__":
    main()
