# bench/host/floor-deploy.sh: the shell floor's on-host part (scripts/bench), the job of
# ../shared/peers-bench's lib/remote-deploy.sh + lib/healthcheck.sh, adapted to cargo-ship's
# artifact (a tar.zst with the binary at its root). One ssh per host runs
#   bash -c "$(cat floor-deploy.sh)" floor DEPLOY_TO RELEASE PORT UNIT_NAME UNIT_TEXT < artifact
# and it unpacks stdin into releases/<id>, flips `current` (symlink + rename), installs the unit
# when it differs (daemon-reload + enable), restarts it, waits until it is active and GET /healthz
# answers 200 (up to ~10 s), and keeps the 5 newest releases. No lock, no preflight, no proof of
# a new process, no rollback: the least any tool can do for the same result.
set -eu
D=$1 R=$2 PORT=$3 NAME=$4 UNIT=$5
RP=$D/releases/$R
mkdir -p "$RP"
tar --zstd -xf - -C "$RP"
ln -sfn "$RP" "$D/.current.tmp" && mv -T "$D/.current.tmp" "$D/current"
if ! printf '%s\n' "$UNIT" | cmp -s - "/etc/systemd/system/$NAME.service"; then
  printf '%s\n' "$UNIT" >"/etc/systemd/system/$NAME.service"
  systemctl daemon-reload
  systemctl enable -q "$NAME"
fi
systemctl restart "$NAME"
get() { exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1; printf 'GET %s HTTP/1.0\r\n\r\n' "$1" >&3; cat <&3; }
r=
for _ in $(seq 1 200); do
  if systemctl is-active --quiet "$NAME"; then
    r=$(get /healthz 2>/dev/null) && case $r in "HTTP/1.1 200"*) break ;; esac
  fi
  sleep 0.05
done
case $r in "HTTP/1.1 200"*) ;; *) echo "GET /healthz on port $PORT failed: ${r:-no answer}" >&2; exit 1 ;; esac
cd "$D/releases" && ls -1 | grep -E '^[0-9]{14}$' | sort | head -n -5 | xargs -r rm -rf
echo "healthy: $NAME on port $PORT, release $R"
