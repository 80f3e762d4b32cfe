#!/usr/bin/env bash
# moto server (the local AWS emulator the AWS tests talk to), in a project-local venv.
#   scripts/moto.sh install   create .venv-moto with the pinned versions (idempotent)
#   scripts/moto.sh start     start it on a free loopback port; prints `export SWITCHBOARD_MOTO_URL=...`
#   scripts/moto.sh stop      stop the server started by `start`
# Versions are pinned in scripts/requirements-moto.txt (moto 5.2.5 and its dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-moto
PIDFILE=$VENV/moto.pid

install() {
    if [[ -x $VENV/bin/moto_server ]] && cmp -s scripts/requirements-moto.txt "$VENV/requirements.txt"; then
        return 0
    fi
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-moto.txt
    cp scripts/requirements-moto.txt "$VENV/requirements.txt"
}

start() {
    install
    local port
    port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # No credentials or region leak in from the caller's environment into the emulator's view.
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$VENV/moto.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 100); do
        if "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/data.json', timeout=1)" 2>/dev/null; then
            echo "export SWITCHBOARD_MOTO_URL=http://127.0.0.1:$port"
            return 0
        fi
        sleep 0.2
    done
    echo "moto_server did not start; see $VENV/moto.log" >&2
    stop
    return 1
}

stop() {
    if [[ -f $PIDFILE ]]; then
        kill "$(cat "$PIDFILE")" 2>/dev/null || true
        rm -f "$PIDFILE"
    fi
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
