#!/usr/bin/env bash
# Install the coding CLIs that tests/test_clients_cli.py runs through cliproxy.
#
# Usage: .ci/install-clients.sh [DIR]     (default DIR: .ci/cache/clients in the repository)
#
# Installs exact versions of Claude Code, Codex CLI and Gemini CLI with npm into DIR, so the
# binaries end up in DIR/node_modules/.bin. Point the tests at another DIR with the
# environment variable CLIPROXY_CLIENTS_DIR. When DIR already has these versions and each
# binary reports its version, nothing is downloaded. Needs node >= 20 (Gemini CLI requires it)
# and npm, and network access to the npm registry.
set -euo pipefail

CLAUDE_CODE_VERSION=2.1.197
CODEX_VERSION=0.171.0
GEMINI_CLI_VERSION=0.61.0
MIN_NODE_MAJOR=20

# "package version binary" per line.
CLIENTS="@anthropic-ai/claude-code $CLAUDE_CODE_VERSION claude
@openai/codex $CODEX_VERSION codex
@google/gemini-cli $GEMINI_CLI_VERSION gemini"

fail() {
    echo "install-clients: ERROR: $*" >&2
    exit 1
}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-$repo_root/.ci/cache/clients}
[[ $# -le 1 ]] || fail "expected at most one argument (the install directory), got $#: $*"

command -v node >/dev/null || fail "node is not installed; install Node.js $MIN_NODE_MAJOR or newer"
command -v npm >/dev/null || fail "npm is not installed; install it together with Node.js $MIN_NODE_MAJOR or newer"
node_major=$(node -p 'process.versions.node.split(".")[0]')
if (( node_major < MIN_NODE_MAJOR )); then
    fail "node $(node --version) is too old: Gemini CLI $GEMINI_CLI_VERSION needs node >= $MIN_NODE_MAJOR"
fi

mkdir -p "$dir" || fail "cannot create the install directory $dir"
dir=$(cd "$dir" && pwd)
bin_dir=$dir/node_modules/.bin

# Print the version in DIR/node_modules/PACKAGE/package.json, or nothing when it is missing.
installed_version() {
    local manifest=$dir/node_modules/$1/package.json
    [[ -f $manifest ]] || return 0
    node -e 'try { console.log(require(process.argv[1]).version) } catch (error) {}' "$manifest"
}

# Succeed when `BINARY --version` runs and prints VERSION.
binary_reports() {
    local binary=$1 version=$2 output
    [[ -x $bin_dir/$binary ]] || return 1
    # HOME points at an empty directory so a version check writes no state into the real one.
    output=$(HOME=$scratch_home timeout 60 "$bin_dir/$binary" --version </dev/null 2>&1) || return 1
    [[ $output == *"$version"* ]]
}

scratch_home=$(mktemp -d)
trap 'rm -rf "$scratch_home"' EXIT

up_to_date=true
specs=()
while read -r package version binary; do
    specs+=("$package@$version")
    if [[ $(installed_version "$package") != "$version" ]] || ! binary_reports "$binary" "$version"; then
        up_to_date=false
    fi
done <<<"$CLIENTS"

if $up_to_date; then
    echo "install-clients: $dir already has ${specs[*]}"
    exit 0
fi

echo "install-clients: installing ${specs[*]} into $dir"
# --save-exact keeps the pins in DIR/package.json. Install scripts stay enabled because
# Claude Code's postinstall puts its native binary in place of the bin/claude.exe stub.
if ! npm install --prefix "$dir" --save-exact --no-audit --no-fund --no-update-notifier \
    --loglevel=error "${specs[@]}"; then
    fail "npm install of ${specs[*]} into $dir failed (see npm's output above); check that the npm registry is reachable"
fi

while read -r package version binary; do
    found=$(installed_version "$package")
    [[ $found == "$version" ]] || fail "$package is ${found:-missing} in $dir/node_modules after npm install, expected $version"
    if ! binary_reports "$binary" "$version"; then
        output=$(HOME=$scratch_home timeout 60 "$bin_dir/$binary" --version </dev/null 2>&1 || true)
        fail "$bin_dir/$binary --version did not report $version; it printed: ${output:-nothing}"
    fi
done <<<"$CLIENTS"

echo "install-clients: installed ${specs[*]} into $dir"
