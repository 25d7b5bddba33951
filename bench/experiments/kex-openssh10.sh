#!/bin/bash
# Cost of OpenSSH's key exchanges per connection, OpenSSH 10 beside Debian 12's 9.2 (issue #18).
# Output of the run quoted in the docs: bench/results/2026-12-06-kex-openssh10.txt
#
# What it does:
#   1. Fetches the OpenSSH source package of Debian 13 (trixie) with apt-get, using a private apt
#      state under $W (its own sources list, lists and cache dirs): /etc/apt and the machine's
#      package lists are not touched and no binary package is installed.
#   2. Builds the upstream tarball (openssh_*.orig.tar.gz; Debian's patches are NOT applied) into
#      $W/inst (./configure --prefix=$W/inst; make; make install). Nothing goes to /usr or PATH.
#   3. Starts that sshd on 127.0.0.1:$PORT only (own ed25519 host key, own sshd_config, root login
#      with a throwaway ed25519 key in $W/run only, no PAM), and checks that the built client
#      lists mlkem768x25519-sha256 in `ssh -Q kex`. The sshd runs in its own mount namespace
#      (unshare -m) in which root's home directory is an empty dir bind-mounted over it: the
#      session's shell (bash, which Debian builds to read ~/.bashrc for ssh commands) then reads
#      no dotfiles; on the machine this was written on, /root/.bashrc runs `pyenv init`, ~150 ms
#      of CPU per connection that has nothing to do with SSH. The rest of the machine is
#      unaffected; the namespace ends with the sshd.
#   4. Measures, in 3 interleaved rounds (A B C D E, A B C D E, ...), $N connections
#      `ssh ... root@127.0.0.1 true` per set for:
#        A  OpenSSH 10 client, mlkem768x25519-sha256
#        B  OpenSSH 10 client, sntrup761x25519-sha512
#        C  OpenSSH 10 client, curve25519-sha256
#        D  /usr/bin/ssh (Debian 12: 9.2p1), sntrup761x25519-sha512(@openssh.com in 9.2)
#        E  /usr/bin/ssh (Debian 12: 9.2p1), curve25519-sha256
#      always against the built sshd. Per connection: client CPU and wall, with /usr/bin/time
#      -f '%U %S %e' (GNU time prints 10 ms steps, truncated) and, around it, bash's `time` with
#      TIMEFORMAT=%3U/%3S/%3R (1 ms steps; the same rusage, plus /usr/bin/time's own exec, which
#      is measured too: "wrapper overhead"). Per set: the whole machine's busy CPU from /proc/stat
#      (user+nice+system+irq+softirq jiffies before/after the set: client, server, and anything
#      else running), and the server's CPU (the sshd listener's own plus its reaped children's,
#      /proc/PID/stat utime+stime+cutime+cstime: sshd-session, sshd-auth and the `true` shell).
#      "other" = machine - client - server: whatever else ran meanwhile (the load we don't control).
#      Before each set the script waits (up to QUIET_WAIT s, default 60) for a second in which the
#      machine's busy CPU is under QUIET_MS (default 250 ms per s), and prints the last sample
#      ("bg"): a shared machine's load spoils the whole-machine figure, not the per-process ones.
#      Before each set one untimed `ssh -v` connection records the negotiated kex
#      ("kex: algorithm:") and warms the caches.
#   5. Prints a summary table, stops the sshd (also on error or Ctrl-C).
#
# How to run (as root: apt, sshd privilege separation and the root login need it; needs
# build-essential, libssl-dev, zlib1g-dev from the machine's own Debian release, and network
# access to deb.debian.org):
#     bash bench/experiments/kex-openssh10.sh | tee bench/results/<date>-kex-openssh10.txt
# Environment: W (work dir, default /var/tmp/openssh10), PORT (default 2299), N (connections per
# set, default 20), ROUNDS (default 3), QUIET_MS, QUIET_WAIT (above). A second run reuses the
# downloaded source and the build.
# Remove $W afterwards to clean up. Prefer the CPU figures to wall time on a shared machine.
set -euo pipefail
W=${W:-/var/tmp/openssh10} PORT=${PORT:-2299} N=${N:-20} ROUNDS=${ROUNDS:-3}
QUIET_MS=${QUIET_MS:-250} QUIET_WAIT=${QUIET_WAIT:-60}
INST=$W/inst RUN=$W/run HZ=$(getconf CLK_TCK)
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
mkdir -p "$W" "$RUN"
log() { printf '%s\n' "$*"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# ---- 1. source, from Debian trixie, with a private apt state --------------------------------
fetch_source() {
  ls "$W"/openssh_*.orig.tar.gz >/dev/null 2>&1 && { log "source: already in $W"; return; }
  local A=$W/apt
  mkdir -p "$A/parts" "$A/lists/partial" "$A/cache/archives/partial"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" > "$A/trixie-src.list"
  APTOPT=(-o "Dir::Etc::SourceList=$A/trixie-src.list" -o "Dir::Etc::SourceParts=$A/parts"
          -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o "APT::Sandbox::User=root")
  apt-get "${APTOPT[@]}" -qq update
  (cd "$W" && apt-get "${APTOPT[@]}" -q source --download-only openssh/trixie) > "$W/apt-source.log" 2>&1 \
    || { cat "$W/apt-source.log" >&2; exit 1; }
  grep -E '^(Get|Fetched|Need)' "$W/apt-source.log" || true
}

# ---- 2. build into $INST ----------------------------------------------------------------------
build() {
  if [ -x "$INST/bin/ssh" ] && [ -x "$INST/sbin/sshd" ]; then log "build: already in $INST"; return; fi
  local tgz; tgz=$(ls "$W"/openssh_*.orig.tar.gz | head -1)
  rm -rf "$W/src"; mkdir -p "$W/src"; tar -xzf "$tgz" -C "$W/src"
  local d; d=$(ls -d "$W"/src/openssh-* | head -1)
  local user=sshd; id sshd >/dev/null 2>&1 || user=nobody
  mkdir -p "$W/empty"; chmod 755 "$W/empty"
  log "build: $(basename "$d"), configure --prefix=$INST --with-privsep-path=$W/empty --with-privsep-user=$user --without-zlib-version-check"
  (cd "$d" && ./configure --prefix="$INST" --with-privsep-path="$W/empty" --with-privsep-user=$user \
      --without-zlib-version-check > "$W/configure.log" 2>&1 \
    && make -j"$(nproc)" > "$W/make.log" 2>&1 && make install > "$W/install.log" 2>&1) \
    || { echo "build failed, see $W/*.log" >&2; exit 1; }
}

# ---- 3. the sshd -------------------------------------------------------------------------------
SSHD_PID=
stop_sshd() {
  if [ -n "$SSHD_PID" ] && kill -0 "$SSHD_PID" 2>/dev/null; then kill "$SSHD_PID"; fi
  SSHD_PID=
}
start_sshd() {
  if [ -f "$RUN/sshd.pid" ] && kill -0 "$(cat "$RUN/sshd.pid")" 2>/dev/null; then
    kill "$(cat "$RUN/sshd.pid")"; sleep 0.5   # left over from an interrupted run of this script
  fi
  [ -f "$RUN/hostkey" ] || "$INST/bin/ssh-keygen" -q -t ed25519 -N '' -C kexbench-host -f "$RUN/hostkey"
  [ -f "$RUN/userkey" ] || "$INST/bin/ssh-keygen" -q -t ed25519 -N '' -C kexbench-user -f "$RUN/userkey"
  cp "$RUN/userkey.pub" "$RUN/authorized_keys"
  rm -f "$RUN/known_hosts"
  cat > "$RUN/sshd_config" <<EOF
ListenAddress 127.0.0.1:$PORT
HostKey $RUN/hostkey
PidFile $RUN/sshd.pid
AuthorizedKeysFile $RUN/authorized_keys
AllowUsers root
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
# not built with PAM; kept for clarity ("Unsupported option" is only logged)
UsePAM no
# authorized_keys lives under /var/tmp (mode 1777), which StrictModes would refuse
StrictModes no
PerSourcePenalties no
PrintMotd no
PrintLastLog no
X11Forwarding no
KexAlgorithms mlkem768x25519-sha256,sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org
LogLevel INFO
EOF
  "$INST/sbin/sshd" -t -f "$RUN/sshd_config" 2>&1 | grep -v -i 'unsupported option' || true
  local home; home=$(getent passwd root | cut -d: -f6)
  mkdir -p "$RUN/home"; chmod 700 "$RUN/home"
  unshare --mount --propagation private sh -c 'mount --bind "$1" "$2" && exec "$3" -f "$4" -E "$5"' \
    sh "$RUN/home" "$home" "$INST/sbin/sshd" "$RUN/sshd_config" "$RUN/sshd.log"
  for _ in $(seq 50); do [ -s "$RUN/sshd.pid" ] && break; sleep 0.1; done
  SSHD_PID=$(cat "$RUN/sshd.pid")
  log "sshd: pid $SSHD_PID on 127.0.0.1:$PORT"
}

# ---- 4. measuring ------------------------------------------------------------------------------
ssh_argv() {  # client kex [extra...]: sets ARGV
  local client=$1 kex=$2; shift 2
  ARGV=("$client" -F /dev/null -o KexAlgorithms="$kex" -o BatchMode=yes -o StrictHostKeyChecking=accept-new
    -o UserKnownHostsFile="$RUN/known_hosts" -o IdentitiesOnly=yes -o IdentityAgent=none
    -i "$RUN/userkey" -p "$PORT" "$@" root@127.0.0.1 true)
}
ssh_cmd() { ssh_argv "$@"; "${ARGV[@]}"; }
busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
server_jiffies() { sed 's/^.*) //' "/proc/$SSHD_PID/stat" | awk '{print $12+$13+$14+$15}'; }
server_idle() {  # wait until the listener has reaped every connection's process
  for _ in $(seq 100); do pgrep -P "$SSHD_PID" >/dev/null || return 0; sleep 0.02; done
  echo "warning: sshd still has children" >&2
}
median() { sort -g | awk '{a[NR]=$1} END{if(NR==0){print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print m}'; }

wait_quiet() {  # sets BG: the busy ms per s of the last 1 s sample
  local t0=$SECONDS a b
  while :; do
    a=$(busy_jiffies); sleep 1; b=$(busy_jiffies); BG=$(( (b - a) * 1000 / HZ ))
    [ "$BG" -lt "$QUIET_MS" ] && return 0
    [ $((SECONDS - t0)) -ge "$QUIET_WAIT" ] && return 0
  done
}
CONN=$RUN/conn.tsv SETS=$RUN/sets.tsv
measure_set() {  # round label client kex
  local round=$1 label=$2 client=$3 kex=$4 tf=$RUN/gnutime tb=$RUN/bashtime i neg
  ssh_cmd "$client" "$kex" -v 2>"$RUN/ssh-v.err" || { cat "$RUN/ssh-v.err" >&2; exit 1; }
  neg=$(grep -m1 'kex: algorithm:' "$RUN/ssh-v.err" | sed 's/.*kex: algorithm: //')
  ssh_argv "$client" "$kex"
  wait_quiet
  server_idle
  local m0 s0 m1 s1; m0=$(busy_jiffies); s0=$(server_jiffies)
  for i in $(seq "$N"); do
    TIMEFORMAT='%3U %3S %3R'
    { time /usr/bin/time -f '%U %S %e' -o "$tf" "${ARGV[@]}" 2>"$RUN/ssh.err" ; } 2>"$tb" \
      || { echo "connection failed ($label $kex):" >&2; cat "$RUN/ssh.err" >&2; exit 1; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$label" "$kex" "$i" "$(tr -s ' \n' ' ' < "$tf")" "$(cat "$tb")" >> "$CONN"
  done
  server_idle
  m1=$(busy_jiffies); s1=$(server_jiffies)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$label" "$kex" "$((m1 - m0))" "$((s1 - s0))" "$neg" >> "$SETS"
  awk -F'\t' -v r="$round" -v l="$label" -v n="$N" -v hz="$HZ" -v m=$((m1 - m0)) -v s=$((s1 - s0)) -v neg="$neg" -v bg="$BG" '
    $1==r && $2==l { split($5,g," "); split($6,b," "); gc+=g[1]+g[2]; bc+=b[1]+b[2]; w+=b[3] }
    END { c=bc/n*1000; sv=s*1000/hz/n; mc=m*1000/hz/n
          printf "round %s %-17s bg %4d  client %5.1f ms (GNU time %5.1f)  server %5.1f  machine %6.1f (other %6.1f)  wall %5.1f  ms per conn; negotiated %s\n",
          r, l, bg, c, gc/n*1000, sv, mc, mc-c-sv, w/n*1000, neg }' "$CONN"
}

# ---- main --------------------------------------------------------------------------------------
trap stop_sshd EXIT INT TERM
log "bench/experiments/kex-openssh10.sh, $(date -u '+%Y-%m-%d %H:%M UTC')"
log "uname -a: $(uname -a)"
log "nproc: $(nproc); CLK_TCK $HZ; load average at start: $(loadavg)"
log "processes using most CPU at start (ps: %CPU averaged over each one's lifetime):"
ps -eo pcpu,etime,comm --sort=-pcpu | head -6 | sed 's/^/  /'
fetch_source
log "Debian source package: $(grep -m1 '^Version:' "$W"/openssh_*.dsc | cut -d' ' -f2) ($(basename "$(ls "$W"/openssh_*.dsc | head -1)")), built from $(basename "$(ls "$W"/openssh_*.orig.tar.gz | head -1)") without Debian's patches"
build
NEWSSH=$INST/bin/ssh OLDSSH=/usr/bin/ssh
log "built client: $("$NEWSSH" -V 2>&1); built sshd: $("$INST/sbin/sshd" -V 2>&1 | head -1)"
log "Debian 12 client: $("$OLDSSH" -V 2>&1)"
log "built client's ssh -Q kex: $("$NEWSSH" -Q kex | tr '\n' ' ')"
"$NEWSSH" -Q kex | grep -qx mlkem768x25519-sha256 || { echo "built ssh lacks mlkem768x25519-sha256" >&2; exit 1; }
OLD_SNTRUP=sntrup761x25519-sha512; "$OLDSSH" -Q kex | grep -qx $OLD_SNTRUP || OLD_SNTRUP=sntrup761x25519-sha512@openssh.com
start_sshd
# one connection to record the host key, checking the setup works
ssh_cmd "$NEWSSH" curve25519-sha256 2>"$RUN/ssh.err" || { cat "$RUN/ssh.err" "$RUN/sshd.log" >&2; exit 1; }

# /usr/bin/time's own cost, included in the bash `time` figures
: > "$RUN/overhead"
for _ in $(seq 20); do TIMEFORMAT='%3U %3S'; { time /usr/bin/time -o /dev/null true ; } 2>>"$RUN/overhead"; done
log "wrapper overhead (/usr/bin/time running true, median user+sys): $(awk '{print ($1+$2)*1000}' "$RUN/overhead" | median) ms"
bg0=$(busy_jiffies); sleep 5; bg1=$(busy_jiffies)
log "background: the machine's busy CPU over 5 s idle before the runs: $(( (bg1 - bg0) * 1000 / HZ / 5 )) ms per s"
log "host key: ed25519; user key: ed25519; $N connections per set, $ROUNDS rounds, interleaved A B C D E"
log ""
: > "$CONN"; : > "$SETS"
CONFIGS=("A_10_mlkem768|$NEWSSH|mlkem768x25519-sha256"
         "B_10_sntrup761|$NEWSSH|sntrup761x25519-sha512"
         "C_10_curve25519|$NEWSSH|curve25519-sha256"
         "D_9.2_sntrup761|$OLDSSH|$OLD_SNTRUP"
         "E_9.2_curve25519|$OLDSSH|curve25519-sha256")
for r in $(seq "$ROUNDS"); do
  for c in "${CONFIGS[@]}"; do IFS='|' read -r label client kex <<<"$c"; measure_set "$r" "$label" "$client" "$kex"; done
done
bg0=$(busy_jiffies); sleep 5; bg1=$(busy_jiffies)
log ""
log "background: the machine's busy CPU over 5 s idle after the runs: $(( (bg1 - bg0) * 1000 / HZ / 5 )) ms per s"
stop_sshd
log "sshd stopped; load average at end: $(loadavg)"
log ""
log "Summary, ms per connection. client = ssh's user+sys (bash time, 1 ms steps), median of the"
log "$((N * ROUNDS)) connections, and [median of the $ROUNDS set means]; user = its user CPU alone, median;"
log "GNU = /usr/bin/time's %U+%S, mean over all connections (10 ms steps, truncated: reads low);"
log "server = sshd's CPU per connection and"
log "machine = whole machine's busy CPU per connection, median of the $ROUNDS sets [min-max];"
log "other = machine - client - server (set means), median of the sets: CPU of everything else;"
log "wall = median of the $((N * ROUNDS)) connections."
log ""
printf '| %-14s | %-34s | %-15s | %5s | %5s | %-19s | %-22s | %6s | %4s |\n' "client" "kex (negotiated)" "client ms" "user" "GNU" "server ms" "machine ms" "other" "wall"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ---------------- ------------------------------------ ----------------- ------- ------- --------------------- ------------------------ -------- ------
for c in "${CONFIGS[@]}"; do
  IFS='|' read -r label client kex <<<"$c"
  cm=$(awk -F'\t' -v l="$label" '$2==l{split($6,b," "); print (b[1]+b[2])*1000}' "$CONN" | median)
  csets=$(for r in $(seq "$ROUNDS"); do awk -F'\t' -v l="$label" -v r="$r" '$2==l && $1==r{split($6,b," "); s+=b[1]+b[2]; n++} END{print s/n*1000}' "$CONN"; done | median)
  cu=$(awk -F'\t' -v l="$label" '$2==l{split($6,b," "); print b[1]*1000}' "$CONN" | median)
  gnu=$(awk -F'\t' -v l="$label" '$2==l{split($5,g," "); s+=g[1]+g[2]; n++} END{printf "%.1f", s/n*1000}' "$CONN")
  wall=$(awk -F'\t' -v l="$label" '$2==l{split($6,b," "); print b[3]*1000}' "$CONN" | median)
  srv=$(awk -F'\t' -v l="$label" -v hz="$HZ" -v n="$N" '$2==l{print $5*1000/hz/n}' "$SETS")
  mac=$(awk -F'\t' -v l="$label" -v hz="$HZ" -v n="$N" '$2==l{print $4*1000/hz/n}' "$SETS")
  oth=$(for r in $(seq "$ROUNDS"); do awk -F'\t' -v l="$label" -v r="$r" -v hz="$HZ" -v n="$N" -v sets="$SETS" '
          $2==l && $1==r {split($6,b," "); c+=b[1]+b[2]}
          END { while ((getline x < sets) > 0) { split(x,f,"\t"); if (f[1]==r && f[2]==l) { m=f[4]; s=f[5] } }
                print (m-s)*1000/hz/n - c/n*1000 }' "$CONN"; done | median)
  neg=$(awk -F'\t' -v l="$label" '$2==l{print $6}' "$SETS" | sort -u | tr '\n' ' ' | sed 's/ $//')
  printf '| %-14s | %-34s | %-15s | %5.1f | %5s | %-19s | %-22s | %6.1f | %4.0f |\n' "${label#?_}" "$neg" \
    "$(printf '%.1f [%.1f]' "$cm" "$csets")" "$cu" "$gnu" \
    "$(printf '%.1f [%.1f-%.1f]' "$(median <<<"$srv")" "$(sort -g <<<"$srv" | head -1)" "$(sort -g <<<"$srv" | tail -1)")" \
    "$(printf '%.1f [%.1f-%.1f]' "$(median <<<"$mac")" "$(sort -g <<<"$mac" | head -1)" "$(sort -g <<<"$mac" | tail -1)")" "$oth" "$wall"
done
log ""
log "raw data: $CONN (round, set, kex, n, GNU time U S e, bash time U S R) and $SETS (round, set, kex, machine jiffies, server jiffies, negotiated)"
