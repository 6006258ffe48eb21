#!/usr/bin/env bash
# cliproxy: set up the virtual environment and serve, or run the tests.
#
#   ./run.sh                 create .venv if needed, install, serve on the config's address
#   ./run.sh setup           only create .venv and install
#   ./run.sh test [ARGS]     install test dependencies and the real CLI clients, run pytest
#   ./run.sh bench [ARGS]    run the benchmark (python -m bench ARGS)
#   ./run.sh cliproxy ARGS   run any cliproxy command, e.g. ./run.sh cliproxy keys list
#
# Environment: CLIPROXY_CONFIG (config path), PYTHON (interpreter to build .venv with).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
cd "$ROOT"

python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null
}

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3 python; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        local version
        for version in $(pyenv versions --bare 2>/dev/null | sort -rV); do
            candidate="$(pyenv root)/versions/$version/bin/python"
            if [ -x "$candidate" ] && python_ok "$candidate"; then
                echo "$candidate"
                return 0
            fi
        done
    fi
    return 1
}

ensure_venv() {
    if [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python"; then
        return 0
    fi
    local python
    if ! python="$(find_python)"; then
        echo "cliproxy needs Python 3.12 or newer, and none was found." >&2
        echo "Install it (e.g. 'apt-get install python3.12 python3.12-venv', 'brew install python@3.12'," >&2
        echo "or 'pyenv install 3.12'), or set PYTHON=/path/to/python3.12 and run ./run.sh again." >&2
        exit 1
    fi
    echo "creating .venv with $python" >&2
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
}

# Install the project when pyproject.toml changed since the last install.
install() {
    local extras="$1"
    local stamp="$VENV/.cliproxy-installed$extras"
    if [ -f "$stamp" ] && [ "$stamp" -nt "$ROOT/pyproject.toml" ]; then
        return 0
    fi
    echo "installing cliproxy$extras into .venv" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT$extras"
    touch "$stamp"
}

command="${1:-serve}"
[ $# -gt 0 ] && shift

case "$command" in
    serve)
        ensure_venv
        install ""
        exec "$VENV/bin/cliproxy" serve "$@"
        ;;
    setup)
        ensure_venv
        install ""
        ;;
    test)
        ensure_venv
        install "[test]"
        "$ROOT/.ci/install-clients.sh" "${CLIPROXY_CLIENTS_DIR:-$ROOT/.ci/cache/clients}"
        export CLIPROXY_CLIENTS_DIR="${CLIPROXY_CLIENTS_DIR:-$ROOT/.ci/cache/clients}"
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    bench)
        ensure_venv
        install "[test]"
        exec "$VENV/bin/python" -m bench "$@"
        ;;
    cliproxy)
        ensure_venv
        install ""
        exec "$VENV/bin/cliproxy" "$@"
        ;;
    *)
        echo "usage: ./run.sh [serve|setup|test|bench|cliproxy] [ARGS...]" >&2
        exit 2
        ;;
esac
