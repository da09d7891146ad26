#!/usr/bin/env bash
# Set up what is missing, then run: `make run` and `make test` call this (README, Quick start).
#
#   scripts/dev.sh setup          Debian packages (scripts/debian-packages) and .venv
#   scripts/dev.sh run [ARGS]     set up, then `dbgvm run ARGS` (the bundled guest at the prompt)
#   scripts/dev.sh test [ARGS]    set up, then `python -m pytest ARGS`
#
# Missing packages are installed with apt-get, as root or through sudo. The project's virtual
# environment is .venv (Debian's own Python is externally managed); the project is installed
# into it (pip install -e '.[test]') again only when pyproject.toml changed. When everything is
# there, nothing is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP=$VENV/.dbgvm-installed          # the pyproject.toml the installation was made from

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "dev.sh: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

probe() {
    case "$1" in
        cmd:*) command -v "${1#cmd:}" >/dev/null 2>&1 ;;
        py:*) command -v python3 >/dev/null 2>&1 && python3 -c "import ${1#py:}" 2>/dev/null ;;
        *) echo "dev.sh: scripts/debian-packages: unknown probe $1" >&2; exit 1 ;;
    esac
}

system_packages() {
    local missing=() probe_ package _
    while read -r probe_ package _; do
        case "$probe_" in ''|'#'*) continue ;; esac
        probe "$probe_" || missing+=("$package")
    done < scripts/debian-packages
    [ ${#missing[@]} -eq 0 ] && return
    echo "dev.sh: installing Debian packages: ${missing[*]}"
    # a package of a foreign architecture (name:ARCH) needs that architecture enabled
    local arch
    for arch in $(printf '%s\n' "${missing[@]}" | sed -n 's/.*:\(.*\)/\1/p' | sort -u); do
        dpkg --print-foreign-architectures | grep -qx "$arch" ||
            as_root dpkg --add-architecture "$arch"
    done
    as_root apt-get update -q || echo "dev.sh: apt-get update had errors; trying anyway" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

python_env() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "dev.sh: creating the virtual environment $VENV"
        python3 -m venv "$VENV"
        rm -f "$STAMP"
    fi
    if ! cmp -s pyproject.toml "$STAMP"; then
        echo "dev.sh: installing dbgvm into $VENV (pip install -e '.[test]')"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
        cp pyproject.toml "$STAMP"
    fi
}

setup() {
    system_packages
    python_env
}

command=${1:-}
[ $# -gt 0 ] && shift
# as `. .venv/bin/activate` would: the tests run `dbgvm` (the console script) too
export VIRTUAL_ENV="$PWD/$VENV"
export PATH="$VIRTUAL_ENV/bin:$PATH"
case "$command" in
    setup) setup ;;
    run) setup; exec "$VENV/bin/dbgvm" run "$@" ;;
    test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
    *) echo "usage: scripts/dev.sh setup | run [ARGS] | test [ARGS]" >&2; exit 2 ;;
esac
