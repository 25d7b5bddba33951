#!/usr/bin/env python3
"""scripts/bench's helper (stdlib only).

  report.py events FILE...   the timestamped JSON lines of cargo-ship runs ("<µs> <json>") as
                             one compact JSON list: [µs, kind, label, host] per event (kind:
                             script, status, summary, error; label: the script's purpose or the
                             status verb)
  report.py report RESULTS   prints the tables of a bench/results/*.jsonl file
"""
import json
import statistics
import sys


def events(paths):
    out = []
    for p in paths:
        for line in open(p, encoding="utf-8", errors="replace"):
            t, _, rest = line.partition(" ")
            try:
                e = json.loads(rest)
                t = int(t)
            except ValueError:
                continue
            kind = e.get("event")
            if kind == "script":
                out.append([t, "script", e.get("purpose", ""), e.get("host", "")])
            elif kind == "status":
                out.append([t, "status", e.get("verb", ""), e.get("host") or ""])
            elif kind in ("summary", "error"):
                out.append([t, kind, "", ""])
    print(json.dumps(out, separators=(",", ":")))


# The phase a script's purpose names (src/steps.rs, rollback.rs).
PURPOSES = [
    ("check the host and take the deploy lock", "preflight"),
    ("stage release", "stage"),
    ("run the before_switch_once", "once"),
    ("switch `current`", "switch"),
    ("verify release", "verify"),
    ("confirm release", "finish"),
    ("give release", "extend"),
    ("roll back", "revert"),
    ("put ", "abort"),
    ("release the deploy lock", "unlock"),
]
# Status verbs after which a host waits for the client (probe) or for the other hosts.
MARKS = {"Staged": "wait", "Switched": "probe", "Healthy": "wait", "Rolled back": "wait"}
PHASES = ["local", "connect", "preflight", "stage", "switch", "probe", "verify", "finish", "revert", "wait"]


def phase_of(purpose):
    for prefix, name in PURPOSES:
        if purpose.startswith(prefix):
            return name
    return purpose.split(" ")[0] or "other"


def phases(rec, host):
    """ms per phase for one host of a cargo-ship scenario, from the events' arrival times."""
    evs = rec.get("events") or []
    if not evs:
        return None
    t = rec["start_unix_ms"] * 1000
    # Until the first status naming the fleet ("Deploying ...", "Rolling back"): cargo, the
    # no-op build and the artifact check, on this machine.
    bounds = [(t, "local")]
    end = None
    for ts, kind, label, h in evs:
        if kind == "summary":
            end = ts
        if kind == "status" and not h and len(bounds) == 1 and label in ("Deploying", "Rolling back"):
            bounds.append((ts, "connect"))
        if h != host:
            continue
        if kind == "script":
            bounds.append((ts, phase_of(label)))
        elif kind == "status" and label in MARKS:
            bounds.append((ts, MARKS[label]))
    if end is None:
        end = evs[-1][0]
    out = {}
    for (a, name), (b, _) in zip(bounds, bounds[1:] + [(end, None)]):
        out[name] = out.get(name, 0) + max(0, b - a) / 1000
    return out


def commands(rec, host):
    """[(label, pids, ms, rc, systemctl calls, (t0, t1, kind, cursor0, cursor1))] per remote
    command of the counting pass. A worker shell (one per connection) runs several scripts: its
    label names their phases. Commands overlap (the lease's channel lives inside the worker's):
    never add up their pids, see whole()."""
    lines = (rec.get("count") or {}).get(host) or []
    sctl = {}
    for l in (rec.get("systemctl") or {}).get(host) or []:
        ident, _, args = l.partition(" ")
        sctl.setdefault(ident, []).append(args)
    scripts = [(ts, label) for ts, kind, label, h in rec.get("events") or [] if kind == "script" and h == host]
    out = []
    rows = []
    for l in lines:
        f = l.split()
        t0, t1, pids, rc = int(f[0]), int(f[1]), int(f[2]), int(f[3])
        kind = f[4] if len(f) > 4 else "other"
        c0, c1 = (int(f[5]), int(f[6])) if len(f) > 6 else (None, None)
        rows.append((t0, t1, pids, rc, kind, c0, c1))
    # A worker runs the scripts sent after the previous worker of the host ended and before it
    # ended (the first one's event comes before its channel opens). Same clock: the hosts are
    # containers on this machine.
    ends = sorted(r[1] for r in rows if r[4] == "worker")
    for t0, t1, pids, rc, kind, c0, c1 in rows:
        name = "command"
        if kind == "worker":
            after = max([e for e in ends if e < t1], default=0)
            inside = []
            for ts, label in scripts:
                ph = phase_of(label)
                if after < ts <= t1 and ph not in inside:
                    inside.append(ph)
            name = "worker: " + (",".join(inside) or "-")
        else:
            for ts, label in scripts:
                if ts <= t0 + 2000:
                    name = phase_of(label)
            if kind == "bootstrap":
                name = f"own channel, from {name}"
        if rec["scenario"].startswith("floor"):
            name = "floor"
        out.append((name, pids, (t1 - t0) / 1000, rc, sctl.get(str(t0), []), (t0, t1, kind, c0, c1)))
    return out


def whole(cmds):
    """The host's pids over the union of the remote commands' windows (overlapping windows
    merged, each counted once from the raw cursors, minus ship-count's one wrapper per command),
    or None when the log has no raw cursors (an older ship-count)."""
    spans = sorted(c[5] for c in cmds)
    if any(s[3] is None for s in spans):
        return None
    total, cur = 0, None  # cur: [end µs, first cursor, last cursor, commands]
    for t0, t1, _, c0, c1 in spans:
        if cur and t0 <= cur[0]:
            cur = [max(cur[0], t1), cur[1], max(cur[2], c1), cur[3] + 1]
        else:
            if cur:
                total += cur[2] - cur[1] - cur[3]
            cur = [t1, c0, c1, 1]
    if cur:
        total += cur[2] - cur[1] - cur[3]
    return total


def size(n):
    if n is None:
        return "-"
    for u in ("B", "KiB", "MiB"):
        if n < 1024 or u == "MiB":
            return f"{n:.0f} {u}" if u == "B" else f"{n:.1f} {u}"
        n /= 1024


def med(xs):
    return statistics.median(xs) if xs else None


def verb(call):
    words = [w for w in call.split() if not w.startswith("-")]
    return words[0] if words else call


def report(path):
    recs = [json.loads(l) for l in open(path)]
    m = recs[0]
    print(f"\ncargo-ship {m['cargo_ship_rev']}{' (dirty)' if m['cargo_ship_dirty'] else ''}: "
          f"{m['hosts']} test host(s), parallel {m.get('parallel', '-')}, "
          f"key exchange {m.get('kex', 'ssh default')}, hardening {m.get('hardening', 'default')}, {m['nproc']} cores, "
          f"{m['kernel']}, {m['date']}, load average at start {m.get('loadavg_at_start', '?')}")
    scen = [r for r in recs if r["type"] == "scenario"]
    direct = {(r["scenario"]): r for r in scen if r["link"] == "direct"}
    n = m["hosts"]
    for r in scen:
        s = r["summary"] or {"hosts": []}
        c = r.get("client") or {}
        pids = list((r.get("host_pids") or {}).values())
        print(f"\n[{r['link']}] {r['scenario']}: `{r['command']}` exit {r['exit']}, "
              f"total wall time {r['wall_ms'] / 1000:.2f} s"
              + (" (one process per host, summed)" if r.get("one_process_per_host") else ""))
        print(f"  client: {c.get('cpu_ms', 0) / 1000:.2f} s CPU (whole tree incl. ssh; "
              f"waited-for user {c.get('user_s') or 0:.2f} + sys {c.get('sys_s') or 0:.2f} s), "
              f"peak RSS {(c.get('max_rss_kib') or 0) / 1024:.1f} MiB; hosts: "
              f"{r.get('hosts_cpu_ms', 0) / 1000:.2f} s CPU in all ({r.get('hosts_cpu_ms', 0) / n:.0f} ms per host); "
              f"new pids per host: median {med(pids) or 0:.0f}, max {max(pids) if pids else 0}")
        prof = r.get("profile")
        if prof:
            top = sorted(prof.items(), key=lambda kv: -kv[1])[:14]
            print("  profile (perf, ms of CPU by process name, client and hosts): "
                  + ", ".join(f"{k} {v / n:.0f}/host" if n > 1 else f"{k} {v:.0f}" for k, v in top))
        rows = s["hosts"]
        if rows:
            walls = [row["millis"] / 1000 for row in rows]
            print(f"  per host: wall min/median/max {min(walls):.2f}/{med(walls):.2f}/{max(walls):.2f} s, "
                  f"commands {sorted(set(row['commands'] for row in rows))}, "
                  f"connections {sorted(set(row['connections'] for row in rows))}, "
                  f"outcomes {sorted(set(row['outcome'] for row in rows))}")
        if rows and n <= 10:
            print(f"  {'HOST':<12} {'OUTCOME':<14} {'VERSION':<8} {'WALL':>7} {'CMDS':>5} {'CONNS':>5} "
                  f"{'SENT':>10}" + (f" {'TCP':>4} {'WIRE UP':>10} {'WIRE DOWN':>10}" if r["proxy"] else ""))
            for row in rows:
                line = (f"  {row['host']:<12} {row['outcome']:<14} {row.get('version') or '-':<8} "
                        f"{row['millis'] / 1000:>6.2f}s {row['commands']:>5} {row['connections']:>5} "
                        f"{size(row['bytes_sent']):>10}")
                if r["proxy"]:
                    p = r["proxy"].get(m["host_ips"][row["host"]]) or {}
                    line += (f" {p.get('tcp_connections', 0):>4} {size(p.get('wire_bytes_up')):>10} "
                             f"{size(p.get('wire_bytes_down')):>10}")
                if row.get("detail"):
                    line += f"  {row['detail']}"
                print(line)
        for e in r.get("errors") or []:
            print("  error: " + e["message"].replace("\n", "\n  "))
        # Phases (median over hosts), and against the direct link: round trips per phase.
        hosts = [row["host"] for row in rows]
        per = [p for p in (phases(r, h) for h in hosts) if p]
        if per:
            names = [p for p in PHASES if any(p in x for x in per)]
            medp = {p: med([x.get(p, 0) for x in per]) for p in names}
            print("  phases (ms, median over hosts): " + ", ".join(f"{p} {medp[p]:.0f}" for p in names)
                  + f"; sum {sum(medp.values()):.0f}")
            d = direct.get(r["scenario"])
            rtt = m.get("rtt_ms") or 0
            if r["link"].startswith("rtt") and d and rtt:
                dper = [p for p in (phases(d, h) for h in hosts) if p]
                if dper:
                    dmed = {p: med([x.get(p, 0) for x in dper]) for p in names}
                    trips = {p: (medp[p] - dmed[p]) / rtt for p in names if p != "wait"}
                    print(f"  round trips per phase ((this - direct) / {rtt} ms): "
                          + ", ".join(f"{p} {v:.1f}" for p, v in trips.items())
                          + f"; total {sum(trips.values()):.1f}")
        if r["link"] != "direct" and r["link"] != "count" and r["scenario"] in direct and (m.get("rtt_ms") or 0):
            d = direct[r["scenario"]]
            print(f"  vs direct: +{(r['wall_ms'] - d['wall_ms']) / 1000:.2f} s total = "
                  f"{(r['wall_ms'] - d['wall_ms']) / m['rtt_ms']:.1f} RTTs")
        if r["link"] == "count":
            allc = {h: commands(r, h) for h in (r.get("count") or {})}
            if allc:
                h0 = sorted(allc)[0]
                print(f"  host processes per remote command ({h0}; sshd's own session process not included; "
                      "commands overlap, their pids are not to be added up):")
                for name, p, ms, rc, calls, _ in allc[h0]:
                    verbs = {}
                    for call in calls:
                        verbs[verb(call)] = verbs.get(verb(call), 0) + 1
                    print(f"    {name:<40} {p:>4} pids {ms:>7.0f} ms  exit {rc:<3} systemctl x{len(calls)}"
                          + (": " + ", ".join(f"{v} {k}" if k > 1 else v for v, k in verbs.items()) if calls else ""))
                sc = [sum(len(x[4]) for x in cs) for cs in allc.values()]
                union = [u for u in (whole(cs) for cs in allc.values()) if u is not None]
                # The whole run: the pid cursor from before the deploy to after it, minus
                # ship-count's wrapper per remote command (sshd's sessions, systemd's forks and
                # the service's own processes included).
                runs = [v - len(allc.get(h, [])) for h, v in (r.get("host_pids") or {}).items()]
                print(f"    whole deploy per host (pid cursor over the run, sshd sessions and systemd's forks "
                      f"included): median {med(runs) or 0:.0f} pids (max {max(runs) if runs else 0}); "
                      + (f"within the remote commands' windows (merged): median {med(union):.0f}; " if union else "")
                      + f"systemctl calls per host median {med(sc):.0f}")
                print("    per script: not counted (the scripts of a connection run in one remote command, "
                      "the worker's; ship-count sees sessions, not scripts)")
    # Against the floor, per link.
    print("\nagainst the shell floor (bench/floor.sh: one ssh per host, artifact on stdin), total wall time:")
    for link in sorted(set(r["link"] for r in scen)):
        fl = next((r for r in scen if r["link"] == link and r["scenario"] == "floor"), None)
        fc = next((r for r in scen if r["link"] == link and r["scenario"] == "floor-cold"), None) or fl
        if not fl:
            continue
        parts = []
        for r in scen:
            if r["link"] == link and not r["scenario"].startswith("floor"):
                f = fc if r["scenario"] == "cold" else fl
                parts.append(f"{r['scenario']} {r['wall_ms'] / 1000:.2f} s = {r['wall_ms'] / max(f['wall_ms'], 1):.2f}x"
                             + (" (of floor-cold)" if f is fc and fc is not fl else ""))
        if fc is not fl:
            parts.insert(0, f"floor-cold {fc['wall_ms'] / 1000:.2f} s")
        print(f"  {link:<8} floor {fl['wall_ms'] / 1000:.2f} s (client CPU {fl['client']['cpu_ms'] / 1000:.2f} s, "
              f"hosts CPU {fl['hosts_cpu_ms'] / 1000:.2f} s); " + "; ".join(parts))
    naive = [r for r in recs if r["type"] == "naive"]
    if naive:
        print(f"\nnaive comparison: {m['naive_commands']} sequential `ssh {naive[0]['host']} true` per link")
        print(f"  {'LINK':<8} {'NEW CONNECTION EACH':>20} {'OVER ONE MASTER':>16} {'TCP CONNS':>10}")
        for r in naive:
            print(f"  {r['link']:<8} {r['per_command_fresh_ms']:>14.0f} ms/cmd "
                  f"{r['per_command_multiplexed_ms']:>10.0f} ms/cmd "
                  f"{r['tcp_connections'] if r['tcp_connections'] is not None else '-':>10}")
    print(f"\nraw results: {path}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "events":
        events(sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
