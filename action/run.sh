#!/usr/bin/env bash
# The second step of action.yml (the first, action/agent.sh, loaded the key into an agent and
# exited). Inputs arrive as INPUT_* environment variables; SHIP_DIR and SHIP_AGENT_PID name the
# first step's private directory and agent. This step's environment never holds the key.
#
# 1. Validate the inputs (before anything runs or is installed).
# 2. An EXIT trap kills the agent and removes the private directory. Nothing is written to
#    ~/.ssh.
# 3. Install cargo-ship when needed: the release archive for this machine, its sha256 checked
#    against action/checksums.txt (committed with the action: the action's commit pins the
#    binary), else `cargo install --locked`.
# 4. Run `cargo-ship ship <command> <environment> <args>` with CARGO_SHIP_KNOWN_HOSTS and
#    CARGO_SHIP_SSH_AUTH_SOCK set (cargo-ship gives the agent to ssh alone, never to the build);
#    cargo-ship (GITHUB_ACTIONS=true) writes the summary, annotations and the step outputs.
set -euo pipefail
# A runner that exports a composite action's inputs to each of its steps (act does, as
# INPUT_SSH-PRIVATE-KEY) would leave the key in this shell's /proc/<pid>/environ, and so in the
# ancestors of every build script: start again without it (same process, new environment).
if [ -z "${SHIP_CLEAN_ENV:-}" ]; then
  exec env -u 'INPUT_SSH-PRIVATE-KEY' -u INPUT_SSH_PRIVATE_KEY SHIP_CLEAN_ENV=1 bash "${BASH_SOURCE[0]}"
fi
unset SHIP_CLEAN_ENV
# Keep the caller's shell hooks out (BASH_ENV, ENV) and never trace.
unset BASH_ENV ENV
set +x
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# 2 (first, so every exit below stops the agent). The private directory and the agent.
dir=${SHIP_DIR:-}
agent_pid=${SHIP_AGENT_PID:-}
unset SHIP_DIR SHIP_AGENT_PID
# shellcheck disable=SC2317 # called by the EXIT trap (shellcheck 0.9 cannot see that)
cleanup() {
  if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; fi
  if [ -n "$dir" ]; then rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { # result, message: an annotation, the outputs, exit 2
  printf '::error title=cargo-ship (%s)::%s\n' "$1" "$2" >&2
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    printf 'result=%s\nexit-code=2\nrelease=\n' "$1" >>"$GITHUB_OUTPUT"
  fi
  exit 2
}

# 1. Inputs.
command=${INPUT_COMMAND:-deploy}
case $command in
  deploy | rollback | status | releases | unlock | prune) ;;
  *) fail usage "input 'command' must be one of deploy, rollback, status, releases, unlock, prune (got '${command//[^A-Za-z0-9_.-]/?}')" ;;
esac
environment=${INPUT_ENVIRONMENT:-}
[ -n "$environment" ] || fail usage "input 'environment' is empty: name the environment to ${command}, e.g. 'environment: prod'"
[[ $environment =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] ||
  fail usage "input 'environment' must be letters, digits, '-', '_' or '.' (an environment name from Cargo.toml)"
version=${INPUT_VERSION:-}
if [ -n "$version" ] && ! [[ $version =~ ^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$ ]]; then
  fail usage "input 'version' must be a version like 0.1.0"
fi
version=${version#v}
workdir=${INPUT_WORKING_DIRECTORY:-.}
[ -d "$workdir" ] || fail usage "input 'working-directory': '$workdir' is not a directory"
# Extra arguments: split on white space, never evaluated or globbed.
read -r -a extra <<<"${INPUT_ARGS//$'\n'/ }" || true
unset INPUT_ARGS

if [ -z "$dir" ] || [ ! -f "$dir/known_hosts" ]; then
  fail error "the agent step left no known_hosts (it must run first)"
fi
tmp_base=${RUNNER_TEMP:-${TMPDIR:-/tmp}}
export CARGO_SHIP_KNOWN_HOSTS="$dir/known_hosts"
if [ -n "$agent_pid" ]; then export CARGO_SHIP_SSH_AUTH_SOCK="$dir/agent.sock"; fi

# 3. cargo-ship itself.
ship=
if command -v cargo-ship >/dev/null 2>&1; then
  have=$(cargo-ship ship --version 2>/dev/null | awk '{print $2}') || have=
  if [ -z "$version" ] || [ "$have" = "$version" ]; then ship=$(command -v cargo-ship); fi
fi
if [ -z "$ship" ]; then
  if [ -z "$version" ]; then
    ref=${GITHUB_ACTION_REF:-}
    if [[ $ref =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]]; then version=${ref#v}; else
      fail usage "no cargo-ship on PATH and no input 'version': set 'version: <x.y.z>' (or install cargo-ship in an earlier step)"
    fi
  fi
  bin_dir="$tmp_base/cargo-ship-$version"
  if [ ! -x "$bin_dir/cargo-ship" ]; then
    case $(uname -m) in
      x86_64 | amd64) target=x86_64-unknown-linux-musl ;;
      aarch64 | arm64) target=aarch64-unknown-linux-musl ;;
      *) target= ;;
    esac
    repo=${ACTION_REPOSITORY:-}
    base=${CARGO_SHIP_DOWNLOAD_URL:-https://github.com/${repo:-cargo-ship/cargo-ship}/releases/download}
    name=cargo-ship-$target.tar.gz
    installed=
    if [ -n "$target" ]; then
      echo "Installing cargo-ship $version ($target) from $base/v$version/$name" >&2
      dl="$dir/download"; mkdir -p "$dl"
      # The expected sha256 is the one committed with the action, never one fetched beside
      # the archive (whoever can replace the archive can replace that too).
      want=$(awk -v f="v$version/$name" '$2 == f { print $1 }' "$here/checksums.txt")
      if [ -z "$want" ]; then
        echo "::warning title=cargo-ship::this action pins no sha256 for cargo-ship $version ($target) in action/checksums.txt; compiling it with cargo install --locked" >&2
      elif curl -fsSL --retry 3 -o "$dl/$name" "$base/v$version/$name"; then
        if [ "$(sha256sum "$dl/$name" | awk '{print $1}')" = "$want" ]; then
          mkdir -p "$bin_dir"
          tar -xzf "$dl/$name" -C "$dl"
          install -m 0755 "$dl/cargo-ship-$target/cargo-ship" "$bin_dir/cargo-ship"
          installed=1
        else
          fail error "the downloaded $name does not match the sha256 this action pins for it in action/checksums.txt: refusing to run it"
        fi
      else
        echo "::warning title=cargo-ship::no prebuilt cargo-ship $version for $target at $base; compiling it with cargo install --locked" >&2
      fi
    fi
    if [ -z "$installed" ]; then
      command -v cargo >/dev/null 2>&1 || fail error "no prebuilt cargo-ship $version for this machine and no cargo to compile it"
      cargo install --locked --quiet --version "$version" --root "$dir/cargo-root" cargo-ship
      mkdir -p "$bin_dir"
      install -m 0755 "$dir/cargo-root/bin/cargo-ship" "$bin_dir/cargo-ship"
    fi
  fi
  ship="$bin_dir/cargo-ship"
fi

# 4. Run it. cargo-ship writes result, exit-code and release to $GITHUB_OUTPUT itself.
cd "$workdir"
export GITHUB_ACTIONS=${GITHUB_ACTIONS:-true}
# cargo's own progress bar would break the log's lines (workflow commands start a line).
export CARGO_TERM_PROGRESS_WHEN=never
size() { if [ -n "${GITHUB_OUTPUT:-}" ]; then wc -c <"$GITHUB_OUTPUT" 2>/dev/null || echo 0; fi; }
before=$(size)
set +e
"$ship" ship "$command" "$environment" "${extra[@]}"
code=$?
set -e
# A cargo-ship that died before writing its outputs (killed, crashed) still leaves some.
if [ -n "${GITHUB_OUTPUT:-}" ] && [ "$(size)" = "$before" ]; then
  printf 'result=error\nexit-code=%s\nrelease=\n' "$code" >>"$GITHUB_OUTPUT"
fi
exit "$code"
