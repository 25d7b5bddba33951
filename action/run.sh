#!/usr/bin/env bash
# The one step of action.yml. Inputs arrive as INPUT_* environment variables.
#
# 1. Validate the inputs (before anything runs or is installed).
# 2. A private directory under $RUNNER_TEMP holds the agent socket and known_hosts; an EXIT
#    trap kills the agent and removes the directory. Nothing is written to ~/.ssh.
# 3. Install cargo-ship when needed: the release archive for this machine, sha256 checked,
#    else `cargo install --locked`.
# 4. Run `cargo-ship ship <command> <environment> <args>` with CARGO_SHIP_KNOWN_HOSTS set;
#    cargo-ship (GITHUB_ACTIONS=true) writes the summary, annotations and the step outputs.
set -euo pipefail
# Keep the caller's shell hooks out (BASH_ENV, ENV) and never trace: the key is in the env.
unset BASH_ENV ENV
set +x

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
[ -n "${INPUT_KNOWN_HOSTS//[[:space:]]/}" ] ||
  fail usage "input 'known-hosts' is empty: give the known_hosts lines of every host (e.g. from a repository variable). cargo-ship never accepts an unknown host key, so there is no insecure fallback"
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

# 2. The private directory, the agent, known_hosts.
tmp_base=${RUNNER_TEMP:-${TMPDIR:-/tmp}}
dir=$(mktemp -d "$tmp_base/cargo-ship.XXXXXXXX")
chmod 0700 "$dir"
agent_pid=
# shellcheck disable=SC2317 # called by the EXIT trap (shellcheck 0.9 cannot see that)
cleanup() {
  if [ -n "$agent_pid" ]; then
    SSH_AGENT_PID=$agent_pid ssh-agent -k >/dev/null 2>&1 || kill "$agent_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf '%s\n' "$INPUT_KNOWN_HOSTS" | tr -d '\r' >"$dir/known_hosts"
unset INPUT_KNOWN_HOSTS
if ! ssh-keygen -l -f "$dir/known_hosts" >/dev/null 2>&1; then
  fail usage "input 'known-hosts' holds no valid known_hosts line: expected '<host> <key type> <base64 key>' lines, e.g. the output of 'ssh-keyscan -t ed25519 <host>' checked against the server's fingerprint"
fi
export CARGO_SHIP_KNOWN_HOSTS="$dir/known_hosts"

if [ -n "${INPUT_SSH_PRIVATE_KEY//[[:space:]]/}" ]; then
  # Mask every long line of the key (short ones would mask ordinary words everywhere).
  while IFS= read -r line; do
    line=${line%$'\r'}
    if [ "${#line}" -ge 20 ] && [[ $line != -----* ]]; then printf '::add-mask::%s\n' "$line"; fi
  done <<<"$INPUT_SSH_PRIVATE_KEY"
  agent_out=$(ssh-agent -s -a "$dir/agent.sock")
  agent_pid=$(sed -n 's/^SSH_AGENT_PID=\([0-9][0-9]*\);.*/\1/p' <<<"$agent_out")
  [ -n "$agent_pid" ] || fail error "could not start ssh-agent"
  export SSH_AUTH_SOCK="$dir/agent.sock"
  unset SSH_AGENT_PID
  if ! printf '%s\n' "$INPUT_SSH_PRIVATE_KEY" | tr -d '\r' | ssh-add -q - 2>"$dir/ssh-add.err"; then
    fail usage "input 'ssh-private-key' is not a usable private key (ssh-add: $(tr '\n' ' ' <"$dir/ssh-add.err")); paste the whole key, BEGIN and END lines included, without a passphrase"
  fi
fi
unset INPUT_SSH_PRIVATE_KEY

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
      if curl -fsSL --retry 3 -o "$dl/$name" "$base/v$version/$name" &&
        curl -fsSL --retry 3 -o "$dl/$name.sha256" "$base/v$version/$name.sha256"; then
        if (cd "$dl" && sha256sum -c --status "$name.sha256"); then
          mkdir -p "$bin_dir"
          tar -xzf "$dl/$name" -C "$dl"
          install -m 0755 "$dl/cargo-ship-$target/cargo-ship" "$bin_dir/cargo-ship"
          installed=1
        else
          fail error "the downloaded $name does not match its sha256: refusing to run it"
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
