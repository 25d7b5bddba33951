#!/usr/bin/env python3
"""latency-proxy.py: a TCP proxy that makes loopback look like a long link (user-space netem).

usage: latency-proxy.py --rtt-ms 40 [--mbit 0] [--pidfile F] [--stats-file F] [--no-connect-delay]
         LPORT:[RHOST:]RPORT [LPORT:[RHOST:]RPORT ...]

Listens on LHOST:LPORT (default 127.0.0.1) for every pair and forwards each accepted connection to
RHOST:RPORT (RHOST: the pair's own, else --connect-host, default 127.0.0.1), so one process serves
every host of a run (e.g. 2601:10.231.8.11:22 2602:10.231.8.12:22 ...). Every chunk is delayed by
RTT/2 in each direction. Each direction is a
queue of (deliver_at, bytes): the reader stamps chunks as they arrive and keeps reading, the writer sleeps
until the head's deliver_at, so order is kept and chunks in flight overlap like on a real long pipe (a
5 MB stream costs RTT/2 once, not once per chunk). EOF (half-close) travels the same queue.

--mbit M (per connection and direction) adds serialization: a chunk leaves the link at
max(arrival, link free) + bytes*8/M, then takes RTT/2 to arrive. Unset or 0: no cap.

Connection setup costs what TCP's handshake costs on a real link: the upstream connect happens
1.5 x RTT after the accept (SYN, SYN-ACK, ACK), so the server accepts when a real server would and a
server-speaks-first protocol (SSH) sees its first byte at the client 2 x RTT after connect(). Bytes the
client sends at once are held until then. --no-connect-delay: connect upstream at once (pure per-chunk
delay). Not modelled: loss, slow start, congestion windows (the endpoints' own windows still apply,
e.g. an SSH channel's).

--pidfile F is written once every listener is bound (so its appearance means ready) and removed on exit.
SIGTERM / SIGINT: close the listeners, drop open connections, exit 0. Standard library only.

Lateness: the proxy measures how late it delivers each chunk against its schedule (the moment it
writes the chunk minus its deliver_at) and how late each upstream connect starts (against accept +
1.5 RTT). SIGUSR1 starts a window (counters reset); SIGUSR2 appends the window's figures as one JSON
line to --stats-file (chunks, mean / p99 / max lateness in ms, chunks more than 1 ms late, connections
and their connect lateness) and starts the next. bench.sh brackets every timed deploy with them. Run it
at real-time priority (chrt -f 10 ...): at normal priority on a busy machine the event loop falls behind
and every chunk arrives late by however long the tools' own CPU work keeps it from running. Not counted:
time a chunk waited in the socket before the loop read it (the read side of the same loop).

One event loop on select(): its timeout has microsecond resolution (epoll rounds every sleep up to a
whole millisecond), but it only takes fds below 1024. Connections that would get a higher fd are
refused (logged): about 400 proxied connections at once with 100 listeners.
"""
import argparse
import asyncio
import collections
import json
import os
import selectors
import signal
import sys

EOF = None  # queue marker for a half-close
TOLERANCE = 0.0002  # deliver a chunk up to 0.2 ms early rather than sleep again for it
MAX_FD = 1000  # select() takes fds below 1024; keep a few for the loop itself


class Lateness:
    """How late deliveries land against their schedule, over a window (SIGUSR1 .. SIGUSR2)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.chunk_late = []  # seconds, one per chunk (negative: early, within TOLERANCE)
        self.connect_late = []
        self.conns = 0
        self.refused = 0

    def report(self):
        def ms(xs, f):
            return round(f(xs) * 1000, 3) if xs else None

        def p99(xs):
            s = sorted(xs)
            return s[min(len(s) - 1, int(0.99 * len(s)))]

        c = self.chunk_late
        return {
            "chunks": len(c),
            "late_mean_ms": ms(c, lambda x: sum(x) / len(x)),
            "late_p99_ms": ms(c, p99),
            "late_max_ms": ms(c, max),
            "chunks_over_1ms": sum(1 for x in c if x > 0.001),
            "conns": self.conns,
            "refused": self.refused,
            "connect_late_mean_ms": ms(self.connect_late, lambda x: sum(x) / len(x)),
            "connect_late_max_ms": ms(self.connect_late, max),
        }


class Timer:
    """How late the event loop wakes up after a sleep (EWMA of the overshoot; a VM's idle CPU takes a few
    hundred microseconds to wake). Sleeps end that much early, so deliveries land on time on average."""

    def __init__(self):
        self.late = 0.0003

    def learn(self, overshoot):
        self.late = 0.9 * self.late + 0.1 * min(max(overshoot, 0.0), 0.002)


def log(msg):
    print(f"latency-proxy[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


class Direction:
    """One direction of one connection: src reader -> timed queue -> dst writer."""

    def __init__(self, loop, timer, half_s, bps, buffer_bytes, lateness):
        self.loop = loop
        self.timer = timer
        self.lateness = lateness
        self.half_s = half_s
        self.bps = bps
        self.buffer_bytes = buffer_bytes
        self.q = collections.deque()  # (deliver_at, bytes | EOF)
        self.queued = 0
        self.link_free = 0.0  # when the modelled link finishes sending what it has (bandwidth cap)
        self.have_item = asyncio.Event()
        self.have_room = asyncio.Event()
        self.have_room.set()
        self.nbytes = 0

    def stamp(self, n):
        now = self.loop.time()
        if self.bps:
            self.link_free = max(now, self.link_free) + n * 8 / self.bps
            return self.link_free + self.half_s
        return now + self.half_s

    def put(self, data):
        self.q.append((self.stamp(len(data) if data else 0), data))
        if data:
            self.queued += len(data)
            self.nbytes += len(data)
            if self.queued >= self.buffer_bytes:
                self.have_room.clear()
        self.have_item.set()

    async def pump_in(self, reader):
        """Read chunks as fast as they come, stamp them; stop reading while the queue is full.
        A reset raises and ends the whole connection (handle() aborts both sides)."""
        while True:
            await self.have_room.wait()
            data = await reader.read(65536)
            self.put(data if data else EOF)
            if not data:
                return

    async def pump_out(self, writer):
        """Deliver queued chunks at their time, in order; coalesce what is due."""
        # Chunks the client sent during the modelled handshake are due when it ends, not before.
        opened = self.loop.time()
        while True:
            if not self.q:
                self.have_item.clear()
                await self.have_item.wait()
            due, _ = self.q[0]
            now = self.loop.time()
            if due - now > TOLERANCE:
                # wake up early by the loop's typical lateness (learned), so deliveries land on time on average
                req = max(0.0, due - now - self.timer.late)
                await asyncio.sleep(req)
                now = self.loop.time()
                if req > 0.001:
                    self.timer.learn(now - (due - self.timer.late))
            out = []
            eof = False
            dues = []
            while self.q and self.q[0][0] <= now + TOLERANCE:
                due, data = self.q.popleft()
                if data is EOF:
                    eof = True
                    break
                out.append(data)
                dues.append(due)
                self.queued -= len(data)
            if out:
                sent = self.loop.time()
                self.lateness.chunk_late.extend(sent - max(d, opened) for d in dues)
                writer.write(b"".join(out) if len(out) > 1 else out[0])
                if self.queued < self.buffer_bytes:
                    self.have_room.set()
                await writer.drain()
            if eof:
                if writer.can_write_eof():
                    writer.write_eof()
                return


class Proxy:
    def __init__(self, args):
        self.args = args
        self.rtt_s = args.rtt_ms / 1000.0
        self.half_s = self.rtt_s / 2
        self.bps = args.mbit * 1e6 if args.mbit else 0
        self.connect_delay = 0.0 if args.no_connect_delay else 1.5 * self.rtt_s
        self.buffer_bytes = args.buffer_kb * 1024
        self.timer = Timer()
        self.lateness = Lateness()
        self.conns = set()
        self.servers = []
        self.nconn = 0

    async def handle(self, rhost, rport, creader, cwriter):
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        sock = cwriter.get_extra_info("socket")
        if sock is not None and sock.fileno() >= MAX_FD:
            self.lateness.refused += 1
            log(f"refusing a connection to {rhost}:{rport}: fd {sock.fileno()} is past select()'s limit")
            cwriter.transport.abort()
            return
        task = asyncio.current_task()
        self.conns.add(task)
        self.nconn += 1
        self.lateness.conns += 1
        cid = self.nconn
        up = Direction(loop, self.timer, self.half_s, self.bps, self.buffer_bytes, self.lateness)
        down = Direction(loop, self.timer, self.half_s, self.bps, self.buffer_bytes, self.lateness)
        swriter = None
        tasks = []
        ok = False
        try:
            tasks.append(asyncio.ensure_future(up.pump_in(creader)))  # client bytes queue up during connect
            if self.connect_delay:
                await asyncio.sleep(self.connect_delay)
                self.lateness.connect_late.append(loop.time() - (accepted + self.connect_delay))
            sreader, swriter = await asyncio.open_connection(rhost, rport)
            tasks += [
                asyncio.ensure_future(up.pump_out(swriter)),
                asyncio.ensure_future(down.pump_in(sreader)),
                asyncio.ensure_future(down.pump_out(cwriter)),
            ]
            # done when both writers have passed their EOF on; the first error anywhere ends it at once
            pending = set(tasks)
            outs = {tasks[1], tasks[3]}
            while outs & pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    if t.exception() is not None:
                        raise t.exception()
            ok = True
        except (ConnectionError, OSError) as e:
            if self.args.verbose:
                log(f"conn {cid} -> {rhost}:{rport}: {e!r}")
        except asyncio.CancelledError:
            pass
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
                elif not t.cancelled():
                    t.exception()  # retrieved: no "never retrieved" noise
            for w in (cwriter, swriter):
                if w is None:
                    continue
                if ok:
                    w.close()  # flushes what is still buffered, then FIN
                else:
                    w.transport.abort()  # error or shutdown: drop it (RST)
            self.conns.discard(task)
            if self.args.verbose:
                log(f"conn {cid} -> {rhost}:{rport} closed: {up.nbytes} bytes up, {down.nbytes} down")

    async def run(self):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR1, self.lateness.reset)
        loop.add_signal_handler(signal.SIGUSR2, self.write_stats)
        for lport, rhost, rport in self.args.pairs:
            srv = await asyncio.start_server(
                lambda r, w, rh=rhost or self.args.connect_host, rp=rport: self.handle(rh, rp, r, w),
                self.args.listen_host, lport, reuse_address=True, backlog=256,
            )
            self.servers.append(srv)
        if self.args.pidfile:
            tmp = f"{self.args.pidfile}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, self.args.pidfile)
        try:
            policy = {os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}.get(os.sched_getscheduler(0), "normal")
            prio = f"{policy} {os.sched_getparam(0).sched_priority}" if policy != "normal" else "normal priority"
        except (AttributeError, OSError):
            prio = "priority unknown"
        pairs = [f"{self.args.listen_host}:{lp}->{rh or self.args.connect_host}:{rp}" for lp, rh, rp in self.args.pairs]
        log(f"rtt {self.args.rtt_ms} ms, "
            f"{'%g Mbit/s' % self.args.mbit if self.bps else 'no bandwidth cap'}, "
            f"connect delay {self.connect_delay * 1000:g} ms, {prio}, {len(pairs)} listener(s): "
            + (" ".join(pairs) if len(pairs) <= 4 else f"{pairs[0]} .. {pairs[-1]}"))
        await stop.wait()
        for srv in self.servers:
            srv.close()
        for t in list(self.conns):
            t.cancel()
        if self.conns:
            await asyncio.wait(list(self.conns), timeout=2)
        if self.args.pidfile:
            try:
                os.unlink(self.args.pidfile)
            except FileNotFoundError:
                pass
        log(f"stopped after {self.nconn} connections")

    def write_stats(self):
        """SIGUSR2: the window's lateness as one JSON line on --stats-file (and the log); a new window."""
        rep = self.lateness.report()
        line = json.dumps(rep, sort_keys=True)
        if self.args.stats_file:
            with open(self.args.stats_file, "a") as f:
                f.write(line + "\n")
        if self.args.verbose or not self.args.stats_file:
            log(f"lateness {line}")
        self.lateness.reset()


def pair(s):
    try:
        parts = s.split(":")
        assert len(parts) in (2, 3)
        lp, rp = int(parts[0]), int(parts[-1])
        rh = parts[1] if len(parts) == 3 else None
        assert 0 < lp < 65536 and 0 < rp < 65536 and rh != ""
        return lp, rh, rp
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f"{s!r} is not LPORT:RPORT or LPORT:RHOST:RPORT")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="+", type=pair, metavar="LPORT:[RHOST:]RPORT")
    ap.add_argument("--rtt-ms", type=float, required=True, help="round-trip time to add (each direction gets half)")
    ap.add_argument("--mbit", type=float, default=0, help="bandwidth cap per connection and direction (0: none)")
    ap.add_argument("--no-connect-delay", action="store_true", help="do not model the TCP handshake")
    ap.add_argument("--buffer-kb", type=int, default=8192,
                    help="bytes in flight per direction before the proxy stops reading (default 8192 KiB)")
    ap.add_argument("--listen-host", default="127.0.0.1")
    ap.add_argument("--connect-host", default="127.0.0.1")
    ap.add_argument("--pidfile")
    ap.add_argument("--stats-file", help="SIGUSR2 appends the lateness of the window since SIGUSR1 here (JSON lines)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    args = ap.parse_args()
    if args.rtt_ms < 0 or args.mbit < 0 or args.buffer_kb <= 0:
        ap.error("--rtt-ms and --mbit must be >= 0, --buffer-kb > 0")
    # select() takes its timeout in microseconds; epoll rounds every sleep up to a whole millisecond,
    # which would add 0-1 ms per hop. Fine for the few hundred sockets a proxy like this holds (< 1024 fds).
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(Proxy(args).run())
    except OSError as e:  # e.g. a listen port in use (the pidfile is not written then)
        log(f"error: {e}")
        sys.exit(1)
    finally:
        loop.close()


if __name__ == "__main__":
    main()
