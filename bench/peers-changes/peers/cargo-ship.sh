#!/bin/bash
# cargo-ship.sh: cargo-ship's entry in bench.sh, the same job as the peers, configured the cargo-ship way
# (hello-ship/Cargo.toml [package.metadata.ship]: one port for every host, so HOSTS_MODE=netns only):
#   HOSTS_MODE=netns RTT_MS=40 NS="1 10" EXTRA_TOOL_NAME=cargo-ship \
#     EXTRA_TOOL_PREP="$PWD/cargo-ship.sh prep" EXTRA_TOOL_CMD="$PWD/cargo-ship.sh deploy" ./bench.sh
# prep    untimed, before every deploy. On the first run of an N (PEERS_RUN=1, or no repo yet) copies
#         hello-ship/ into a fresh scratch git repo $PEERS_WORK/cargo-ship/N$PEERS_N. Every run: writes its
#         Cargo.toml (hello-ship's, version = $VERSION, plus [package.metadata.ship.environments.bench] with
#         hosts = $HOSTS, ssh_config = $SSH_CONFIG and parallel = N unless SHIP_BENCH_DEFAULTS=1), refreshes Cargo.lock, commits (a clean tree), then
#         runs `cargo ship build` (the artifact, so the timed deploy finds it built).
# deploy  timed: `cargo ship deploy bench` in that repo, nothing else.
# env from bench.sh: HOSTS SSH_CONFIG VERSION PEERS_N PEERS_RUN PEERS_WORK PEERS_HOSTS_MODE HELLO_PORT
# cargo-ship must be a cargo subcommand on PATH (cargo install --path <checkout>, or
# PATH=<checkout>/target/release:$PATH bench.sh ...); prep says so and fails when `cargo ship --version` does.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$here/hello-ship
die() { echo "cargo-ship.sh: $*" >&2; exit 1; }
: "${PEERS_N:?from bench.sh}"
repo=${PEERS_WORK:-/var/tmp/peers-work}/cargo-ship/N$PEERS_N

toml_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

prep() {
  : "${HOSTS:?}" "${SSH_CONFIG:?}" "${VERSION:?}"
  local port h list hosts=() git=(git -C "$repo" -c user.name=peers-bench -c user.email=peers-bench@localhost -c commit.gpgsign=false)
  # the config has one port for all hosts: the hosts must not share a network namespace
  [ "${PEERS_HOSTS_MODE:-ports}" = netns ] \
    || die "needs HOSTS_MODE=netns (hello-ship's config runs hello on the same port on every host; ports mode gives each host its own port)"
  port=$(sed -n 's/^args = \["--port", "\([0-9]*\)".*/\1/p' "$src/Cargo.toml")
  [ "$port" = "${HELLO_PORT:-}" ] || die "hello-ship/Cargo.toml runs hello on port ${port:-?}, the bench checks HELLO_PORT=${HELLO_PORT:-unset}"
  cmp -s "$here/hello/src/main.rs" "$src/src/main.rs" || echo "cargo-ship.sh: warning: hello-ship/src differs from hello/src (the peers' artifact)" >&2

  if [ "${PEERS_RUN:-1}" = 1 ] || ! [ -d "$repo/.git" ]; then
    rm -rf "$repo"; mkdir -p "$repo"
    cp -r "$src/src" "$src/Cargo.lock" "$src/.gitignore" "$repo/"
    git init -q -b main "$repo"
  fi
  for h in $HOSTS; do hosts+=("$(toml_str "$h")"); done
  {
    awk -v v="$VERSION" '/^\[/ { sec = $0 } sec == "[package]" && /^version = / && !done { print "version = \"" v "\""; done = 1; next } { print }' \
      "$src/Cargo.toml"
    echo
    echo "# written by cargo-ship.sh prep: bench.sh's hosts (N=$PEERS_N)"
    echo "[package.metadata.ship.environments.bench]"
    list=$(printf '%s, ' "${hosts[@]}"); echo "hosts = [${list%, }]"
    echo "ssh_config = $(toml_str "$SSH_CONFIG")"
    # SHIP_BENCH_DEFAULTS=1: cargo-ship with its own defaults (no parallel), as a user would run it
    [ -n "${SHIP_BENCH_DEFAULTS:-}" ] || echo "parallel = $PEERS_N   # every host at once, as the peers run (Ansible forks = N, pyinfra --parallel N)"
    # SHIP_BENCH_ENV_LINE: one more line for the environment (e.g. connect_parallel = 100)
    [ -z "${SHIP_BENCH_ENV_LINE:-}" ] || echo "$SHIP_BENCH_ENV_LINE"
    # SHIP_BENCH_HARDENING=false: the unit without systemd's sandboxing, as the peers' lib/hello.service has none
    if [ -n "${SHIP_BENCH_HARDENING:-}" ]; then
      echo; echo "[package.metadata.ship.environments.bench.systemd]"; echo "hardening = $SHIP_BENCH_HARDENING"
    fi
  } > "$repo/Cargo.toml"
  (cd "$repo" && cargo generate-lockfile --offline -q)   # the lock carries the version: commit it too
  "${git[@]}" add -A
  "${git[@]}" commit -q -m "hello $VERSION"
  echo "cargo-ship.sh: $repo at $("${git[@]}" rev-parse --short HEAD): hello $VERSION, hosts $HOSTS, ssh_config $SSH_CONFIG"

  cargo ship --version 2>&1 || die "\`cargo ship --version\` failed: cargo-ship is not installed yet (cargo install --path <checkout>, or put its target/release on PATH); stopping before \`cargo ship build\`"
  cd "$repo" && cargo ship build
}

deploy() {
  [ -f "$repo/Cargo.toml" ] || die "no scratch repo $repo: run '$0 prep' first (EXTRA_TOOL_PREP)"
  cd "$repo" && exec cargo ship deploy bench
}

case ${1:-} in
  prep) prep ;;
  deploy) deploy ;;
  *) echo "usage: $0 prep | deploy   (env from bench.sh, see the header)" >&2; exit 2 ;;
esac
