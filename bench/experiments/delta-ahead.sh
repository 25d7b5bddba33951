#!/bin/bash
# #18 third round: the delta prepared ahead, measured (bench/README.md, "Third round").
# OLD: a cargo-ship build before fd8959f (copied aside before rebuilding); NEW: this tree's release build.
# Output of the run quoted there: bench/results/2026-12-06T1401Z-delta-ahead.txt
# Measures a one-line change to a big artifact (12 MiB blob, real binary bytes) deployed to one
# test host with zstd: the stage phase with the old binary (delta computed during the stage) and
# the new one (delta computed while connecting). Alternates tools; each deploy's delta is against
# the previous deploy's artifact.
set -eu
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OLD=${OLD:?OLD=<an older cargo-ship binary>} NEW=${NEW:-$REPO/target/release/cargo-ship}
cd "$REPO"; bash scripts/testhosts up --run-id dexp --count 1 --dir /tmp/thd | tail -1
APP=/tmp/dexp; rm -rf $APP; mkdir -p $APP; cp -r fixtures/hello/{Cargo.toml,Cargo.lock,src,config,static} $APP/
cp "$OLD" $APP/static/blob.bin   # 12 MiB of real binary bytes
cd $APP; sed -i '/^\[package.metadata.ship.environments/,$d' Cargo.toml
cat >> Cargo.toml <<'T'

[package.metadata.ship.environments.x]
hosts = ["root@host0"]
ssh_config = "/tmp/thd/ssh_config"
deploy_to = "/opt/x"

[package.metadata.ship.environments.x.systemd]
unit = "x"
args = ["--port", "18090"]

[package.metadata.ship.environments.x.health]
http = "http://127.0.0.1:18090/healthz"
settle = "0s"
T
bump() { sed -i "0,/^version = \".*\"/s//version = \"$1\"/" Cargo.toml; printf '%08d' "$2" | dd of=static/blob.bin bs=1 seek=$((4000000 + $2 * 8)) conv=notrunc status=none; "$NEW" ship build >/dev/null 2>&1; "$NEW" ship build >/dev/null 2>&1; }
bump 0.1.0 0; "$NEW" ship deploy x >/dev/null 2>&1
for i in $(seq 1 6); do
  if [ $((i % 2)) = 1 ]; then bin=$OLD; name=old; else bin=$NEW; name=new; fi
  bump 0.1.$i $i
  t0=$(date +%s%N)
  "$bin" ship deploy x -v --message-format json 2>/dev/null | while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done > /tmp/dexp-$i.json
  t1=$(date +%s%N)
  python3 - "$name" $(( (t1 - t0) / 1000000 )) /tmp/dexp-$i.json <<'PY'
import json, sys
name, wall, path = sys.argv[1], sys.argv[2], sys.argv[3]
ev = []
for l in open(path):
    t, j = l.split(" ", 1)
    ev.append((float(t), json.loads(j)))
up = [e for t, e in ev if e.get("verb") == "Uploaded"]
t_stage = next(t for t, e in ev if e.get("event") == "script" and e.get("purpose", "").startswith("stage"))
t_staged = next(t for t, e in ev if e.get("verb") == "Staged")
t_dep = next(t for t, e in ev if e.get("verb") == "Deploying")
t_conn = next(t for t, e in ev if e.get("verb") == "Connected")
print(f"{name}: wall {wall} ms; connect {1000*(t_conn-t_dep):.0f} ms, stage (script sent to Staged) {1000*(t_staged-t_stage):.0f} ms;", up[0]["message"] if up else "no upload")
PY
done
cd "$REPO"; bash scripts/testhosts down --run-id dexp --dir /tmp/thd >/dev/null 2>&1
