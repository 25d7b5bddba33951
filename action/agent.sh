#!/usr/bin/env bash
# The first step of action.yml: the only one that ever sees the deploy key (issue #16).
#
# The runner gives a step its inputs in the environment, where they stay readable in
# /proc/<pid>/environ for as long as the step's shell lives. So the key is loaded here, in a
# step that exits before cargo-ship (and the `cargo build` it runs, with every build script and
# proc macro of every dependency) starts:
#
# 1. A private directory under $RUNNER_TEMP (0700) gets known_hosts and the agent's socket.
# 2. ssh-agent starts with an empty environment (so its /proc/<pid>/environ holds no key) and
#    gets the key on ssh-add's standard input; it outlives this step, and the next one kills it.
# 3. The step outputs `dir` and `agent-pid` (neither is secret). The socket is never exported
#    as SSH_AUTH_SOCK: the next step hands it to cargo-ship as CARGO_SHIP_SSH_AUTH_SOCK, which
#    cargo-ship gives to ssh alone (IdentityAgent) and never to the build.
set -euo pipefail
unset BASH_ENV ENV
set +x

fail() { # result, message: an annotation, the outputs, exit 2
  printf '::error title=cargo-ship (%s)::%s\n' "$1" "$2" >&2
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    printf 'result=%s\nexit-code=2\nrelease=\n' "$1" >>"$GITHUB_OUTPUT"
  fi
  exit 2
}

[ -n "${INPUT_KNOWN_HOSTS//[[:space:]]/}" ] ||
  fail usage "input 'known-hosts' is empty: give the known_hosts lines of every host (e.g. from a repository variable). cargo-ship never accepts an unknown host key, so there is no insecure fallback"

tmp_base=${RUNNER_TEMP:-${TMPDIR:-/tmp}}
dir=$(mktemp -d "$tmp_base/cargo-ship.XXXXXXXX")
chmod 0700 "$dir"
agent_pid=
ok=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -z "$ok" ]; then
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; fi
    rm -rf "$dir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf '%s\n' "$INPUT_KNOWN_HOSTS" | tr -d '\r' >"$dir/known_hosts"
if ! ssh-keygen -l -f "$dir/known_hosts" >/dev/null 2>&1; then
  fail usage "input 'known-hosts' holds no valid known_hosts line: expected '<host> <key type> <base64 key>' lines, e.g. the output of 'ssh-keyscan -t ed25519 <host>' checked against the server's fingerprint"
fi

if [ -n "${INPUT_SSH_PRIVATE_KEY//[[:space:]]/}" ]; then
  # Mask every long line of the key (short ones would mask ordinary words everywhere).
  while IFS= read -r line; do
    line=${line%$'\r'}
    if [ "${#line}" -ge 20 ] && [[ $line != -----* ]]; then printf '::add-mask::%s\n' "$line"; fi
  done <<<"$INPUT_SSH_PRIVATE_KEY"
  agent_out=$(env -i PATH="$PATH" ssh-agent -s -a "$dir/agent.sock")
  agent_pid=$(sed -n 's/^SSH_AGENT_PID=\([0-9][0-9]*\);.*/\1/p' <<<"$agent_out")
  [ -n "$agent_pid" ] || fail error "could not start ssh-agent"
  if ! printf '%s\n' "$INPUT_SSH_PRIVATE_KEY" | tr -d '\r' |
    env -i PATH="$PATH" SSH_AUTH_SOCK="$dir/agent.sock" ssh-add -q - 2>"$dir/ssh-add.err"; then
    fail usage "input 'ssh-private-key' is not a usable private key (ssh-add: $(tr '\n' ' ' <"$dir/ssh-add.err")); paste the whole key, BEGIN and END lines included, without a passphrase"
  fi
  rm -f "$dir/ssh-add.err"
fi
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  printf 'dir=%s\nagent-pid=%s\n' "$dir" "$agent_pid" >>"$GITHUB_OUTPUT"
fi
ok=1
