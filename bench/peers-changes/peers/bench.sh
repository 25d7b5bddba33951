#!/bin/bash
# bench.sh: peer-comparison deploy benchmark (needs root).
# For each N in $NS and each tool in $TOOLS it boots N fresh Debian test hosts (HOSTS_MODE below), deploys
# the hello artifact $RUNS times (a first deploy to the fresh hosts, then re-deploys of new versions), checks
# every deploy from outside, and prints: tool, N, median wall seconds, SSH connections the hosts accepted
# per deploy (from each host's sshd journal), and the single times.
#
# usage: bench.sh                         (defaults: NS="1 10" RUNS=3, every tool below)
#   TOOLS="shell shell-pipe capistrano ansible ansible-pipelining pyinfra"   which peers to run (TOOLS= none)
#   NS="1 10"  RUNS=3  KEEP_LOGS=1
#   HOSTS_MODE=ports   ports: testhosts.sh; the hosts share this machine's network namespace, so host hK's sshd
#                        listens on 127.0.0.1:PEER_SSH_BASEPORT+K and its hello on HELLO_BASEPORT+K (per-host
#                        ports, which every tool's config encodes per host):
#                        SHIP_HOSTS_DIR=/var/tmp/peerhosts  PEER_SSH_BASEPORT=2500 (hosts on 2501..)  HELLO_BASEPORT=8100
#                      netns: lib/netns-hosts.sh (testnet.sh's way, own names): each host has its own network
#                        namespace on bridge PEER_BR, address PEER_NET.(10+K), sshd on 22 and hello on the SAME
#                        port HELLO_PORT on every host, bound to 0.0.0.0, as real servers do (per-environment
#                        config, e.g. cargo-ship's). Never testnet.sh's 10.231.7.x / shipbr0 / /var/tmp/shipnet:
#                        PEER_NETNS_DIR=/var/tmp/peerhosts-netns  PEER_NET=10.231.8  PEER_BR=shipbr1  HELLO_PORT=8100
#   SHIP_ROOTFS=/var/tmp/shiprootfs-py  PEERS_WORK=/var/tmp/peers-work  PEERS_VENV=/var/tmp/peers-venv
#   RTT_MS=0     >0: every tool's SSH goes through ../latency-proxy.py, which adds this round-trip time
#                (each direction RTT/2, TCP handshake 1.5 RTT) like a WAN link; loopback hides round trips.
#                The tools get a copy of the ssh_config whose hosts point at the proxy (127.0.0.1:
#                PEER_PROXY_BASEPORT+K, default SSH base + 100) and known_hosts entries for those ports.
#                One proxy process for every host: ports: 127.0.0.1:2600+K -> 127.0.0.1:2500+K; netns:
#                127.0.0.1:2600+K -> PEER_NET.(10+K):22. It runs at real-time priority (PROXY_RT, below)
#                and logs how late it delivered chunks against its schedule during each timed deploy
#                (the log line of each run; $PEERS_WORK/lateness-<stamp>.tsv).
#                Health checks (on the hosts) and bench's own checks do not pass through it.
#   PROXY_RT=10  SCHED_FIFO priority of the proxy (chrt -f); PROXY_RT= runs it at normal priority
#   RTT_MBIT=0   with RTT_MS: also cap each connection at this many Mbit/s per direction
#
# Hook for one more tool (e.g. cargo-ship), measured the same way in the same run:
#   EXTRA_TOOL_NAME=cargo-ship EXTRA_TOOL_CMD='cargo ship deploy ...' [EXTRA_TOOL_PREP='...'] bench.sh
# EXTRA_TOOL_CMD runs with `bash -c` in the directory bench.sh was started from, timed; EXTRA_TOOL_PREP
# (optional) runs just before it, untimed, e.g. to write a config naming the hosts. Both get the
# same environment as the built-in tools:
#   SSH_CONFIG      ssh_config with Host h1..hN (root, key, pinned known_hosts; through the proxy with RTT_MS)
#   HOSTS           "h1 h2 ... hN"
#   ARTIFACT        tarball with bin/hello; VERSION / HELLO_VERSION: the version it answers on /version
#   HELLO_PORT      netns mode only (unset in ports mode): every host's hello listens on this port, on all
#                   addresses: unit ExecStart=/opt/hello/current/bin/hello --port $HELLO_PORT --bind 0.0.0.0
#                   (bench checks http://PEER_NET.(10+K):HELLO_PORT/version from this machine)
#   HELLO_BASEPORT  ports mode: host hK's hello must listen on HELLO_BASEPORT+K (hosts share one network
#                   namespace): unit ExecStart=/opt/hello/current/bin/hello --port $((HELLO_BASEPORT+K)) --bind 127.0.0.1
#   HELLO_BIND      the address hello binds: 0.0.0.0 in netns mode, unset (= 127.0.0.1) in ports mode
#   HELLO_SRC       the hello crate (for a tool that builds it itself; HELLO_VERSION compiles the version in)
#   PEERS_N, PEERS_RUN (1..RUNS), SHIP_HOSTS_DIR, PEERS_LIB (lib/ with hello.service, healthcheck.sh),
#   PEERS_HOSTS_MODE (ports | netns), PEERS_WORK (bench's work dir, for a tool's scratch state)
# It must exit 0 only when every host runs the new version: /opt/hello/releases/<id> unpacked,
# /opt/hello/current -> that release, hello.service (re)started, 5 releases kept.
set -euo pipefail
PEERS=$(cd "$(dirname "$0")" && pwd)
ORIG_PWD=$PWD
HOSTS_MODE=${HOSTS_MODE:-ports}
case $HOSTS_MODE in
  ports) export SHIP_HOSTS_DIR=${SHIP_HOSTS_DIR:-/var/tmp/peerhosts}
         unset HELLO_PORT HELLO_BIND ;;   # per-host ports (HELLO_BASEPORT+K) on 127.0.0.1
  netns) export SHIP_HOSTS_DIR=${PEER_NETNS_DIR:-/var/tmp/peerhosts-netns}
         export PEER_NETNS_DIR=$SHIP_HOSTS_DIR PEER_NET=${PEER_NET:-10.231.8} PEER_BR=${PEER_BR:-shipbr1}
         export HELLO_PORT=${HELLO_PORT:-8100} HELLO_BIND=0.0.0.0 ;;
  *) echo "bench: HOSTS_MODE=$HOSTS_MODE: ports or netns" >&2; exit 1 ;;
esac
export PEERS_HOSTS_MODE=$HOSTS_MODE
export SHIP_ROOTFS=${SHIP_ROOTFS:-/var/tmp/shiprootfs-py}
export HELLO_BASEPORT=${HELLO_BASEPORT:-8100}
export PEERS_VENV=${PEERS_VENV:-/var/tmp/peers-venv}
SSH_BASEPORT=${PEER_SSH_BASEPORT:-2500}
NS=${NS:-"1 10"}; RUNS=${RUNS:-3}
TOOLS=${TOOLS-"shell shell-pipe capistrano ansible ansible-pipelining pyinfra"}   # TOOLS= : only the extra tool
EXTRA_NAME=${EXTRA_TOOL_NAME:-extra}
[ -n "${EXTRA_TOOL_CMD:-}" ] && TOOLS="$TOOLS $EXTRA_NAME"
WORK=${PEERS_WORK:-/var/tmp/peers-work}; export PEERS_WORK=$WORK
TESTHOSTS=${TESTHOSTS:-$PEERS/../testhosts.sh}
NETNS_HOSTS=${NETNS_HOSTS:-$PEERS/lib/netns-hosts.sh}
HD=$SHIP_HOSTS_DIR
CFG=$HD/ssh_config
RTT_MS=${RTT_MS:-0}; RTT_MBIT=${RTT_MBIT:-0}
PROXY_BASEPORT=${PEER_PROXY_BASEPORT:-$((SSH_BASEPORT + 100))}
PROXY=${LATENCY_PROXY:-$PEERS/../latency-proxy.py}

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
[ "$(id -u)" = 0 ] || die "needs root (systemd-nspawn, overlay mounts)"
[[ $RTT_MS =~ ^[0-9]+([.][0-9]+)?$ && $RTT_MBIT =~ ^[0-9]+([.][0-9]+)?$ ]] || die "RTT_MS and RTT_MBIT must be numbers (ms, Mbit/s)"
rtt_on() { awk -v r="$RTT_MS" 'BEGIN { exit !(r > 0) }'; }
netns() { [ "$HOSTS_MODE" = netns ]; }
if netns; then
  [[ $HELLO_PORT =~ ^[0-9]+$ ]] && [ "$HELLO_PORT" -ge 1 ] && [ "$HELLO_PORT" -le 65535 ] || die "HELLO_PORT=$HELLO_PORT is not a port"
  [ "$PEER_NET" != 10.231.7 ] && [ "$PEER_BR" != shipbr0 ] || die "10.231.7.x / shipbr0 are testnet.sh's hosts (in use by others): pick PEER_NET / PEER_BR"
fi
mkdir -p "$WORK"
exec 9>"$WORK/bench.lock"
flock -n 9 || die "another bench.sh holds $WORK/bench.lock"

# ---- hosts -------------------------------------------------------------------------------------------
# Hosts, proxies and tools start with fd 9 (the lock) closed: a daemon left behind by a killed bench.sh must
# not hold the lock, or the next bench.sh could not take over and clean it up.
hosts_down() {
  if netns; then "$NETNS_HOSTS" down >/dev/null 2>&1 || true
  else "$TESTHOSTS" down >/dev/null 2>&1 || true; fi
}
port_busy() { ss -Htln "sport = :$1" | grep -q .; }
host_addr() { echo "$PEER_NET.$((10 + $1))"; }   # netns mode: hK's address
hosts_up() {  # $1 = N
  local n=$1 i
  if netns; then   # nothing of the hosts listens in this machine's namespace; the subnet is checked by netns-hosts.sh
    (cd / && "$NETNS_HOSTS" up "$n" >/dev/null 9>&-)
  else
    for i in $(seq 1 "$n"); do
      port_busy $((SSH_BASEPORT + i)) && die "port $((SSH_BASEPORT + i)) is in use (not ours?): pick PEER_SSH_BASEPORT"
      port_busy $((HELLO_BASEPORT + i)) && die "port $((HELLO_BASEPORT + i)) is in use: pick HELLO_BASEPORT"
    done
    (cd / && "$TESTHOSTS" up "$n" "$SSH_BASEPORT" >/dev/null 9>&-)
  fi
  # boot finished (sshd answering is not enough for systemctl restart to behave)
  for i in $(seq 1 "$n"); do
    ssh -F "$CFG" -o BatchMode=yes "h$i" 'systemctl is-system-running --wait >/dev/null 2>&1 || true' </dev/null >/dev/null 2>&1 &
  done
  wait
  for i in $(seq 1 "$n"); do
    ssh -F "$CFG" -o BatchMode=yes "h$i" true </dev/null >/dev/null 2>&1 || die "h$i did not come up (see $HD/h$i/console.log)"
  done
}
# ---- latency (RTT_MS > 0) -----------------------------------------------------------------------------
# One latency-proxy.py for the whole run, at real-time priority (PROXY_RT): ports mode 127.0.0.1:
# PROXY_BASEPORT+K -> hK's sshd on 127.0.0.1:SSH_BASEPORT+K; netns mode 127.0.0.1:PROXY_BASEPORT+K ->
# PEER_NET.(10+K):22 (each pair names its own address). One process per host (as before) meant 100
# Python processes at 100 hosts competing with the tools for 2 cores; at normal priority a loaded machine
# also kept the proxy from delivering on time, which distorts the very latency it models. Its lateness
# over each timed deploy goes to $PROXY_STATS (proxy_window below). The tools get $RTT_CFG (a copy of the hosts' ssh_config
# with HostName 127.0.0.1 and the proxy ports) and $RTT_KH (the hosts' keys under the proxy ports, so
# StrictHostKeyChecking stays on). Only SSH goes through the proxy: the health checks run on the hosts
# against hello's loopback port, and verify()/accepts() do not use SSH.
RTT_CFG=$WORK/ssh_config.rtt; RTT_KH=$WORK/known_hosts.rtt
PROXY_PIDF=$WORK/latency-proxy.pid   # (latency-proxy.hK.pid: one per host, left by an older bench.sh)
PROXY_RT=${PROXY_RT-10}
[ -z "$PROXY_RT" ] || [[ $PROXY_RT =~ ^[0-9]+$ ]] || die "PROXY_RT=$PROXY_RT: a SCHED_FIFO priority (1-99), or empty"
proxy_alive() { local p; p=$(cat "${1:-$PROXY_PIDF}" 2>/dev/null) && [ -n "$p" ] && grep -q latency-proxy "/proc/$p/cmdline" 2>/dev/null; }
proxy_down() {  # the proxies a (maybe killed) earlier bench.sh left behind are ours too: same $WORK, we hold the lock
  local f p pids=()
  for f in "$WORK"/latency-proxy.pid "$WORK"/latency-proxy.h*.pid; do
    [ -e "$f" ] || continue
    if proxy_alive "$f"; then p=$(cat "$f"); pids+=("$p"); kill -TERM "$p" 2>/dev/null || true; fi
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  for f in "$WORK"/latency-proxy.pid "$WORK"/latency-proxy.h*.pid; do
    [ -e "$f" ] || continue
    if proxy_alive "$f"; then kill -KILL "$(cat "$f")" 2>/dev/null || true; fi
    rm -f "$f"
  done
}
proxy_up() {  # $1 = the largest N
  local i pairs=() rt=()
  proxy_down
  if ! netns; then
    [ $((PROXY_BASEPORT + $1)) -lt $((SSH_BASEPORT + 1)) ] || [ $((PROXY_BASEPORT + 1)) -gt $((SSH_BASEPORT + $1)) ] \
      || die "proxy ports $((PROXY_BASEPORT + 1)).. overlap the hosts' ssh ports: pick PEER_PROXY_BASEPORT"
  fi
  for i in $(seq 1 "$1"); do
    port_busy $((PROXY_BASEPORT + i)) && die "port $((PROXY_BASEPORT + i)) is in use: pick PEER_PROXY_BASEPORT"
    if netns; then pairs+=("$((PROXY_BASEPORT + i)):$(host_addr "$i"):22")
    else pairs+=("$((PROXY_BASEPORT + i)):$((SSH_BASEPORT + i))"); fi
  done
  [ -z "$PROXY_RT" ] || rt=(chrt -f "$PROXY_RT")
  : >> "$PROXY_STATS"
  # not a job of this shell (hosts_up's `wait` would wait for it); it writes its pid file once listening
  ("${rt[@]}" python3 "$PROXY" --rtt-ms "$RTT_MS" --mbit "$RTT_MBIT" --pidfile "$PROXY_PIDF" \
     --stats-file "$PROXY_STATS" "${pairs[@]}" </dev/null >/dev/null 2>>"$LOGS/latency-proxy.log" 9>&- &)
  for _ in $(seq 1 50); do proxy_alive && return; sleep 0.1; done
  die "latency-proxy.py did not start (see $LOGS/latency-proxy.log)"
}
# The proxy's lateness over one timed deploy: `proxy_window start` resets its counters (SIGUSR1), `proxy_window
# end TOOL N RUN` has it append them to $PROXY_STATS (SIGUSR2), adds a labelled row to $LATE and prints a
# summary for the run's log line.
PROXY_STATS=; LATE=
proxy_window() {
  rtt_on && proxy_alive || return 0
  local pid before line
  pid=$(cat "$PROXY_PIDF")
  if [ "$1" = start ]; then kill -USR1 "$pid"; return 0; fi
  before=$(wc -l < "$PROXY_STATS" 2>/dev/null || echo 0)
  kill -USR2 "$pid"
  for _ in $(seq 1 50); do [ "$(wc -l < "$PROXY_STATS" 2>/dev/null || echo 0)" -gt "$before" ] && break; sleep 0.05; done
  line=$(tail -1 "$PROXY_STATS" 2>/dev/null) || return 0
  python3 - "$2" "$3" "$4" "$line" "$LATE" <<'PY' || true
import json, sys
tool, n, run, line, out = sys.argv[1:6]
s = json.loads(line)
f = lambda k: "-" if s.get(k) is None else "%g" % s[k]
with open(out, "a") as o:
    o.write("\t".join([tool, n, run, str(s["chunks"]), f("late_mean_ms"), f("late_p99_ms"), f("late_max_ms"),
                       str(s["chunks_over_1ms"]), str(s["conns"]), f("connect_late_mean_ms"), f("connect_late_max_ms"),
                       str(s["refused"])]) + "\n")
print("proxy late mean %s / p99 %s / max %s ms over %d chunks (%d > 1 ms), connects late max %s ms%s" % (
    f("late_mean_ms"), f("late_p99_ms"), f("late_max_ms"), s["chunks"], s["chunks_over_1ms"],
    f("connect_late_max_ms"), ", %d REFUSED" % s["refused"] if s["refused"] else ""))
PY
}
rtt_config() {  # after the hosts are up (fresh host keys): the proxied copies of ssh_config and known_hosts
  # every Host hK block: HostName 127.0.0.1, Port PROXY_BASEPORT+K (in ports mode this is SSH port - base + proxy base)
  awk -v pb="$PROXY_BASEPORT" -v kh="$RTT_KH" '
    $1 == "Host" { k = substr($2, 2) + 0 }
    $1 == "HostName" { print "  HostName 127.0.0.1"; next }
    $1 == "Port" { print "  Port " (pb + k); next }
    $1 == "UserKnownHostsFile" { print "  UserKnownHostsFile " kh; next }
    { print }' "$CFG" > "$RTT_CFG.tmp"
  if netns; then   # "PEER_NET.(10+K) key" -> "[127.0.0.1]:PROXY_BASEPORT+K key"
    awk -v net="$PEER_NET." -v pb="$PROXY_BASEPORT" '
      { p = $1; if (index(p, net) == 1) { p = substr(p, length(net) + 1)
          if (p ~ /^[0-9]+$/) { $1 = "[127.0.0.1]:" (pb + p - 10); print } } }' "$HD/known_hosts" > "$RTT_KH"
  else
    awk -v b="$SSH_BASEPORT" -v pb="$PROXY_BASEPORT" '
      { p = $1; if (sub(/^\[127\.0\.0\.1\]:/, "", p) && p ~ /^[0-9]+$/) { $1 = "[127.0.0.1]:" (p - b + pb); print } }' \
      "$HD/known_hosts" > "$RTT_KH"
  fi
  mv "$RTT_CFG.tmp" "$RTT_CFG"
  local i pids=()
  for i in $(seq 1 "$1"); do   # the proxied path works, host key pinned (before c0: not counted)
    ssh -F "$RTT_CFG" -o BatchMode=yes "h$i" true </dev/null >/dev/null 2>&1 & pids+=($!)
  done
  for i in "${!pids[@]}"; do wait "${pids[i]}" || die "h$((i + 1)) is not reachable through latency-proxy.py ($RTT_CFG)"; done
}

# 'Accepted publickey' lines in every host's sshd journal, read through the host's mount namespace
# (no SSH connection of our own, so counting does not disturb the count).
accepts() {  # $1 = N
  local total=0 i p c k
  for i in $(seq 1 "$1"); do
    p=$(cat "$HD/h$i/pid"); c=$(pgrep -P "$p" | head -1)
    [ -n "$c" ] || die "no init process under nspawn pid $p for h$i"
    k=$(nsenter -t "$c" -m -- journalctl -q -t sshd -o cat --no-pager 2>/dev/null | grep -c 'Accepted publickey' || true)
    total=$((total + k))
  done
  echo "$total"
}
accepts_settled() {  # wait for the journals to stop growing (they lag sshd by a few ms)
  local a b
  a=$(accepts "$1")
  for _ in 1 2 3 4 5 6 7 8 9 10; do sleep 0.3; b=$(accepts "$1"); [ "$a" = "$b" ] && break; a=$b; done
  echo "$a"
}
hello_url() {  # $1 = K: hK's /version as seen from this machine
  if netns; then echo "http://$(host_addr "$1"):$HELLO_PORT/version"; else echo "http://127.0.0.1:$((HELLO_BASEPORT + $1))/version"; fi
}
# outside check of one deploy: new version served on every host, current -> a release, releases kept
verify() {  # $1 = N, $2 = version, $3 = run
  local n=$1 want=$2 run=$3 i v m t cnt exp
  exp=$(( run < 5 ? run : 5 ))
  for i in $(seq 1 "$n"); do
    v=$(curl -fsS -m 3 --noproxy '*' "$(hello_url "$i")" 2>/dev/null || true)
    [ "$v" = "$want" ] || { echo "h$i serves '${v:-nothing}', want $want"; return 1; }
    m=$HD/h$i/merged/opt/hello
    t=$(readlink "$m/current" 2>/dev/null || true)
    case $t in */releases/*|releases/*) ;; *) echo "h$i: /opt/hello/current -> '${t}' is not a release"; return 1;; esac
    # the peers pack bin/hello; cargo-ship packs the binary at the release root
    [ -x "$m/releases/${t##*/}/bin/hello" ] || [ -x "$m/releases/${t##*/}/hello" ] || { echo "h$i: $t/bin/hello (or $t/hello) missing"; return 1; }
    cnt=$(find "$m/releases" -mindepth 1 -maxdepth 1 -type d | wc -l)
    [ "$cnt" = "$exp" ] || { echo "h$i: $cnt releases after deploy $run, want $exp"; return 1; }
  done
}

# ---- tools -------------------------------------------------------------------------------------------
run_tool() {  # $1 = tool name; env set by the caller
  case $1 in
    shell)              "$PEERS/shell/deploy.sh" ;;
    shell-pipe)         SHELL_PIPE=1 "$PEERS/shell/deploy.sh" ;;
    capistrano)         "$PEERS/capistrano/deploy.sh" ;;
    ansible)            "$PEERS/ansible/deploy.sh" ;;
    ansible-pipelining) ANSIBLE_PIPELINING=True "$PEERS/ansible/deploy.sh" ;;
    pyinfra)            "$PEERS/pyinfra/deploy.sh" ;;
    "$EXTRA_NAME")      (cd "$ORIG_PWD" && bash -c "$EXTRA_TOOL_CMD") ;;
    *) echo "unknown tool $1" >&2; return 2 ;;
  esac
}
prep_tool() {
  if [ "$1" = "$EXTRA_NAME" ] && [ -n "${EXTRA_TOOL_PREP:-}" ]; then (cd "$ORIG_PWD" && bash -c "$EXTRA_TOOL_PREP"); fi
}

# ---- main --------------------------------------------------------------------------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
LOGS=$WORK/logs/$stamp; mkdir -p "$LOGS"
RES=$WORK/results-$stamp.tsv
PROXY_STATS=$LOGS/latency-proxy-stats.jsonl; LATE=$WORK/lateness-$stamp.tsv
log "setup (peers, rootfs $SHIP_ROOTFS)"
"$PEERS/setup.sh"
hosts_down
trap 'hosts_down; proxy_down' EXIT
trap 'exit 130' INT TERM
TOOL_CFG=$CFG RTT_DESC="rtt 0 (loopback)"
if rtt_on; then
  RTT_DESC="rtt $RTT_MS ms (latency-proxy.py$(awk -v m="$RTT_MBIT" 'BEGIN { if (m > 0) printf ", %s Mbit/s", m }'))"
  prio="normal priority"; [ -z "$PROXY_RT" ] || prio="SCHED_FIFO $PROXY_RT"
  if netns; then log "$RTT_DESC: 127.0.0.1:$((PROXY_BASEPORT + 1)).. -> sshd $(host_addr 1)..:22 (one proxy for every host, $prio)"
  else log "$RTT_DESC: 127.0.0.1:$((PROXY_BASEPORT + 1)).. -> sshd 127.0.0.1:$((SSH_BASEPORT + 1)).. ($prio)"; fi
  printf 'tool\tN\trun\tchunks\tlate_mean_ms\tlate_p99_ms\tlate_max_ms\tchunks_over_1ms\tconns\tconnect_late_mean_ms\tconnect_late_max_ms\trefused\n' > "$LATE"
  proxy_up "$(printf '%s\n' $NS | sort -n | tail -1)"; TOOL_CFG=$RTT_CFG
fi

# PEERS_SSH_KEX=ALGS: the tools that use OpenSSH (shell, shell-pipe, ansible*, the extra tool) get a copy of the
# ssh_config whose first block is `Host *` / `KexAlgorithms ALGS`, e.g. curve25519-sha256: the key exchange
# Capistrano (net-ssh: ecdh-sha2-nistp521 first) and pyinfra (paramiko: curve25519 first) settle on, where
# OpenSSH >= 9.0 picks sntrup761x25519 (post-quantum, ~85 ms more client CPU per connection here). Capistrano and
# pyinfra keep the plain config (net-ssh would apply the line and may lack the algorithm).
KEX=${PEERS_SSH_KEX:-}
[ -z "$KEX" ] || [[ $KEX =~ ^[a-z0-9@.,+-]+$ ]] || die "PEERS_SSH_KEX=$KEX: a comma-separated list of algorithms (ssh -Q kex)"
kex_config() {  # tool -> the ssh_config it gets
  case $1 in
    capistrano|pyinfra) echo "$TOOL_CFG" ;;
    *) if [ -z "$KEX" ]; then echo "$TOOL_CFG"
       else { printf 'Host *\n  KexAlgorithms %s\n\n' "$KEX"; cat "$TOOL_CFG"; } > "$WORK/ssh_config.kex"; echo "$WORK/ssh_config.kex"; fi ;;
  esac
}
[ -z "$KEX" ] || log "OpenSSH-based tools: KexAlgorithms $KEX (PEERS_SSH_KEX)"

HOSTS_DESC=
if netns; then
  HOSTS_DESC=", hosts netns ($(host_addr 1).. on $PEER_BR, hello :$HELLO_PORT on every host)"
  log "hosts: own network namespace each, $(host_addr 1).. on bridge $PEER_BR, sshd :22, hello :$HELLO_PORT ($HD)"
fi
log "building $RUNS hello artifacts"
declare -a ART VER
for r in $(seq 1 "$RUNS"); do
  VER[r]="1.0.$r-$stamp"; ART[r]=$WORK/hello-$r.tar.gz
  "$PEERS/lib/mkartifact.sh" "${VER[r]}" "${ART[r]}"
done

printf 'tool\tN\trun\twall_s\tssh_conns\tstatus\n' > "$RES"
for n in $NS; do
  hosts=$(for i in $(seq 1 "$n"); do printf 'h%s ' "$i"; done); hosts=${hosts% }
  for tool in $TOOLS; do
    log "$tool N=$n: fresh hosts"
    hosts_down; hosts_up "$n"
    if rtt_on; then rtt_config "$n"; fi
    tool_cfg=$(kex_config "$tool")
    for r in $(seq 1 "$RUNS"); do
      export SSH_CONFIG=$tool_cfg HOSTS=$hosts ARTIFACT=${ART[r]} VERSION=${VER[r]} HELLO_VERSION=${VER[r]}
      export HELLO_SRC=$PEERS/hello PEERS_LIB=$PEERS/lib PEERS_N=$n PEERS_RUN=$r
      lf=$LOGS/$tool-N$n-r$r.log
      prep_tool "$tool" > "$lf" 2>&1 9>&- || { log "  prep failed (see $lf)"; }
      c0=$(accepts_settled "$n")
      proxy_window start
      t0=$(date +%s.%N)
      set +e; run_tool "$tool" >> "$lf" 2>&1 9>&-; rc=$?; set -e
      t1=$(date +%s.%N)
      late=$(proxy_window end "$tool" "$n" "$r")
      c1=$(accepts_settled "$n")
      wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
      conns=$((c1 - c0))
      if [ $rc -ne 0 ]; then status="FAIL(rc=$rc)"
      elif why=$(verify "$n" "${VER[r]}" "$r"); then status=ok
      else status="BAD($why)"; fi
      label=$tool; [ "$tool_cfg" = "$TOOL_CFG" ] || label="$tool+kex"   # the table says which ran with PEERS_SSH_KEX
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$n" "$r" "$wall" "$conns" "$status" >> "$RES"
      log "  run $r: ${wall}s, $conns ssh connections, $status${late:+; $late}"
      [ "$status" = ok ] || log "  log: $lf"
      sleep 1   # release ids have 1 s resolution
    done
  done
done
hosts_down; proxy_down; trap - EXIT

# ---- table -------------------------------------------------------------------------------------------
{
  echo
  echo "peer deploy benchmark $stamp: $(nproc) cores, runs=$RUNS, $RTT_DESC$HOSTS_DESC (run 1 = first deploy to fresh hosts)"
  echo "versions: $(cap --version 2>/dev/null | head -1 | cut -d' ' -f1-3); ansible-core $("$PEERS_VENV/bin/python" -c 'import ansible; print(ansible.__version__)' 2>/dev/null); pyinfra $("$PEERS_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("pyinfra"))' 2>/dev/null); $(ssh -V 2>&1)"
  awk -F'\t' '
    NR == 1 { next }
    { k = $1 SUBSEP $2; if (!(k in seen)) { seen[k] = 1; order[++n] = k }
      t[k] = t[k] (t[k] == "" ? "" : " ") $4; c[k] = c[k] (c[k] == "" ? "" : " ") $5
      if ($6 != "ok") bad[k] = bad[k] " r" $3 ":" $6 }
    function med(s,   a, m, i, j, x) { m = split(s, a, " ")
      for (i = 2; i <= m; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > x + 0; j--) a[j+1] = a[j]; a[j+1] = x }
      return (m % 2) ? a[(m+1)/2] : (a[m/2] + a[m/2+1]) / 2 }
    BEGIN { printf "%-20s %3s %9s %12s %10s  %-24s %s\n", "tool", "N", "median_s", "conns/deploy", "conns/host", "wall_s (runs)", "status" }
    END { for (i = 1; i <= n; i++) { k = order[i]; split(k, p, SUBSEP); mc = med(c[k])
      printf "%-20s %3s %9.2f %12s %10.1f  %-24s %s\n", p[1], p[2], med(t[k]), mc, mc / p[2], t[k], (k in bad) ? "FAIL" bad[k] : "ok" } }
  ' "$RES"
  echo "raw: $RES; logs: $LOGS"
  if rtt_on; then
    echo "latency-proxy lateness per timed deploy (ms, chunk delivered vs its schedule): $LATE"
    awk -F'\t' 'NR == 1 { next } { k = $1 " N=" $2; m[k] = (m[k] == "" ? "" : m[k] " ") $5 "/" $7 }
      END { for (k in m) printf "  %-28s mean/max per run: %s\n", k, m[k] }' "$LATE" | sort
  fi
} | tee "$WORK/table-$stamp.txt"
