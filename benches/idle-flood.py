#!/usr/bin/env python3
"""Hold N connections to a server that send nothing, for a bounded time.

  idle-flood.py HOST:PORT --count N --seconds S [--tls] [--sources K]
                [--ready FILE]

--tls completes a TLS 1.3 handshake (ALPN sft/1, no certificate check: a
stranger has no token and needs no trust) and then sends nothing; without it
the sockets are raw TCP that never send a byte. A connection the server
closes is opened again after a short pause (an attacker reconnects), until
the time is up. --sources K spreads the connections over the source
addresses 127.0.0.2 .. 127.0.0.(K+1) (loopback only). Writes "ready" to
--ready FILE once the first round of connections is up (or tried), and
prints one JSON line of counts at the end. Bounded: at most N connections
open at once, at most S seconds, only to the address given (which must be
loopback).
"""

import argparse
import asyncio
import ipaddress
import json
import resource
import ssl
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--sources", type=int, default=0)
    ap.add_argument("--ready")
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit("idle-flood.py: loopback addresses only")
    if not (0 < a.count <= 20000 and 0 < a.seconds <= 3600):
        raise SystemExit("idle-flood.py: count 1..20000, seconds 1..3600")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, a.count + 256) if hard != resource.RLIM_INFINITY else a.count + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    print(json.dumps(asyncio.run(flood(host, int(port), a))), flush=True)


async def flood(host: str, port: int, a) -> dict:
    ctx = None
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_alpn_protocols(["sft/1"])
    stats = {"mode": "tls" if a.tls else "raw", "target": a.count, "opened": 0,
             "handshakes": 0, "failed": 0, "closed_by_server": 0, "open_now": 0,
             "max_open": 0}
    deadline = time.monotonic() + a.seconds
    first_round = asyncio.Event()
    started = 0

    async def one(i: int) -> None:
        nonlocal started
        src = None
        if a.sources > 0:
            src = (f"127.0.0.{2 + i % a.sources}", 0)
        first = True
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=ctx, local_addr=src,
                                            server_hostname="localhost" if ctx else None),
                    timeout=min(10.0, max(left, 0.1)))
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                stats["failed"] += 1
                if first:
                    first = False
                    started += 1
                    if started >= a.count:
                        first_round.set()
                await asyncio.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
                continue
            stats["opened"] += 1
            if ctx:
                stats["handshakes"] += 1
            stats["open_now"] += 1
            stats["max_open"] = max(stats["max_open"], stats["open_now"])
            if first:
                first = False
                started += 1
                if started >= a.count:
                    first_round.set()
            try:
                # send nothing; wait for the server to give up on us
                await asyncio.wait_for(r.read(1), timeout=max(deadline - time.monotonic(), 0.01))
                stats["closed_by_server"] += 1
            except asyncio.TimeoutError:
                pass
            except (OSError, ssl.SSLError):
                stats["closed_by_server"] += 1
            finally:
                stats["open_now"] -= 1
                w.transport.abort()
            await asyncio.sleep(min(0.5, max(deadline - time.monotonic(), 0)))

    async def announce() -> None:
        try:
            await asyncio.wait_for(first_round.wait(), timeout=a.seconds)
        except asyncio.TimeoutError:
            pass
        if a.ready:
            with open(a.ready, "w") as f:
                f.write(f"ready {stats['open_now']}\n")

    # open them in waves of 100 so the first round is up quickly but not at once
    tasks = [asyncio.create_task(announce())]
    for i in range(a.count):
        tasks.append(asyncio.create_task(one(i)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    return stats


if __name__ == "__main__":
    main()
