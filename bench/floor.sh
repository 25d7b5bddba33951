#!/usr/bin/env bash
# bench/floor.sh: the shell floor of scripts/bench: per host, in parallel, ONE ssh that receives the
# artifact on its standard input and runs bench/host/floor-deploy.sh (unpack, switch, unit,
# restart, health check, keep 5). One connection and one remote command per host.
#   bench/floor.sh SSH_CONFIG DEPLOY_TO PORT UNIT ARTIFACT HOST...
set -euo pipefail
cfg=$1 deploy_to=$2 port=$3 unit=$4 artifact=$5; shift 5
here=$(cd "$(dirname "$0")" && pwd)
script=$(cat "$here/host/floor-deploy.sh")
release=$(date -u +%Y%m%d%H%M%S)
text="[Unit]
Description=cargo-ship bench: shell floor

[Service]
ExecStart=$deploy_to/current/hello --port $port
Restart=on-failure

[Install]
WantedBy=multi-user.target"
cmd="bash -c $(printf %q "$script") floor $(printf %q "$deploy_to") $release $port $(printf %q "$unit") $(printf %q "$text")"
pids=()
for h in "$@"; do
  ssh -F "$cfg" -o BatchMode=yes "$h" "$cmd" <"$artifact" > >(sed "s/^/$h: /") 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
