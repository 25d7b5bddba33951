#!/usr/bin/env python3
"""A user-space delay proxy for cargo-ship's benchmark (python3 stdlib only).

The kernel here has no netem qdisc, so a slow link is simulated in user space: for each
mapping LISTEN=TARGET the proxy accepts TCP connections on LISTEN and forwards them to TARGET
(a test host's sshd), holding every chunk for RTT/2 in each direction. Chunks keep their order
and are pipelined (a chunk is not delayed by the delay of the one before it), so the link adds
latency, not a bandwidth cap.

    delay_proxy.py --rtt 40 --map 127.0.0.1:0=10.230.7.10:22 [--map ...]
                   --ready-file F --stats-file S --parent-pid PID --max-seconds 1800

Port 0 picks a free port; once every listener is bound, the proxy writes one line per mapping,
"<target ip> <target port> <listen host> <listen port>", to --ready-file (atomically).
--stats-file gets, per mapping, the connections accepted, the connections open and the bytes
forwarded each way (JSON, rewritten atomically whenever it changed, at most every 100 ms).

Bounded and self-stopping: only the targets named by --map are ever contacted, and they must
be private (RFC 1918) or loopback addresses; the proxy exits when --parent-pid is gone (its
start time guards against pid reuse) or after --max-seconds, and on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys
import time

CHUNK = 64 * 1024
# Chunks in flight per direction before the reader waits (bounds memory: 256 x 64 KiB).
QUEUE_CHUNKS = 256


def proc_start_time(pid):
    """Start time (clock ticks since boot) of `pid`, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
        # The command name may contain spaces and parentheses: split after the last ')'.
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def parse_addr(s, what):
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SystemExit(f"delay_proxy: {what} must be HOST:PORT, got {s!r}")
    return host, int(port)


class Stats:
    def __init__(self, path):
        self.path = path
        self.maps = {}
        self.dirty = True

    def entry(self, key):
        return self.maps.setdefault(
            key, {"accepted": 0, "open": 0, "bytes_up": 0, "bytes_down": 0})

    def bump(self, key, field, n=1):
        self.entry(key)[field] += n
        self.dirty = True

    def write(self, force=False):
        if not self.path or not (self.dirty or force):
            return
        self.dirty = False
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"time": time.time(), "maps": self.maps}, f, sort_keys=True)
        os.replace(tmp, self.path)


async def pump(reader, writer, delay, stats, key, field):
    """Copies reader -> writer, each chunk released `delay` seconds after it was read."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue(QUEUE_CHUNKS)

    async def read_side():
        try:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time() + delay, b""))

    async def write_side():
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                stats.bump(key, field, len(data))
                await writer.drain()
        except (ConnectionError, OSError):
            return

    r = asyncio.ensure_future(read_side())
    try:
        await write_side()
    finally:
        r.cancel()


async def handle(client_r, client_w, target, delay, stats, key):
    stats.bump(key, "accepted")
    stats.bump(key, "open")
    server_w = None
    try:
        server_r, server_w = await asyncio.wait_for(
            asyncio.open_connection(target[0], target[1]), timeout=10)
        await asyncio.gather(
            pump(client_r, server_w, delay, stats, key, "bytes_up"),
            pump(server_r, client_w, delay, stats, key, "bytes_down"),
        )
    except (OSError, asyncio.TimeoutError) as e:
        print(f"delay_proxy: {key}: {e}", file=sys.stderr)
    finally:
        for w in (client_w, server_w):
            if w is not None:
                w.close()
        stats.bump(key, "open", -1)


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rtt", type=float, default=40.0, help="round-trip time to add, in ms")
    p.add_argument("--map", action="append", required=True, metavar="LISTEN=TARGET",
                   help="e.g. 127.0.0.1:0=10.230.7.10:22 (repeatable)")
    p.add_argument("--ready-file", help="written once every listener is bound")
    p.add_argument("--stats-file", help="per-mapping counters, JSON")
    p.add_argument("--parent-pid", type=int, required=True, help="exit when this process is gone")
    p.add_argument("--max-seconds", type=float, default=3600, help="exit after this long")
    args = p.parse_args()

    parent_start = proc_start_time(args.parent_pid)
    if parent_start is None:
        raise SystemExit(f"delay_proxy: --parent-pid {args.parent_pid} is not running")
    delay = max(args.rtt, 0.0) / 2000.0
    stats = Stats(args.stats_file)
    servers, ready = [], []
    for m in args.map:
        listen_s, sep, target_s = m.partition("=")
        if not sep:
            raise SystemExit(f"delay_proxy: --map must be LISTEN=TARGET, got {m!r}")
        listen, target = parse_addr(listen_s, "LISTEN"), parse_addr(target_s, "TARGET")
        try:
            ip = ipaddress.ip_address(target[0])
        except ValueError:
            raise SystemExit(f"delay_proxy: TARGET must be an IP address, got {target[0]!r}")
        if not (ip.is_private or ip.is_loopback):
            raise SystemExit(f"delay_proxy: refusing non-private target {ip}")
        key = f"{target[0]}:{target[1]}"
        stats.entry(key)

        def factory(target=target, key=key):
            return lambda r, w: handle(r, w, target, delay, stats, key)

        srv = await asyncio.start_server(factory(), listen[0], listen[1], reuse_address=True)
        servers.append(srv)
        port = srv.sockets[0].getsockname()[1]
        ready.append(f"{target[0]} {target[1]} {listen[0]} {port}\n")
    stats.write(force=True)
    if args.ready_file:
        tmp = f"{args.ready_file}.tmp"
        with open(tmp, "w") as f:
            f.writelines(ready)
        os.replace(tmp, args.ready_file)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    deadline = loop.time() + args.max_seconds
    reason = "signal"
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.1)
        except asyncio.TimeoutError:
            pass
        stats.write()
        if proc_start_time(args.parent_pid) != parent_start:
            reason = f"parent {args.parent_pid} is gone"
            break
        if loop.time() > deadline:
            reason = f"--max-seconds {args.max_seconds:g} reached"
            break
    for srv in servers:
        srv.close()
    stats.write(force=True)
    print(f"delay_proxy: exiting ({reason})", file=sys.stderr)
    # Open connections are dropped with the process.
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
