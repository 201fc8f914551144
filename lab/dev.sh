#!/usr/bin/env bash
# One entry point for people and CI (see README.md):
#   bash lab/dev.sh run    set up, apply the sample inventory into the default SQLite store, serve it
#   bash lab/dev.sh test   set up (Debian tools the tests talk to, venv), then lint, types, tests
#   bash lab/dev.sh check  lint + types + tests on an already set-up checkout
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

# Real protocol peers the tests use: curl (tftp://, http://), tftp-hpa, net-snmp, OpenSSH,
# dnsmasq and Kea (config checks), Kamailio and baresip (SIP registration), Chromium and its
# driver (the technician page's browser test). Installed here,
# never assumed to be on the machine.
DEBS=(curl tftp-hpa snmp openssh-client dnsmasq-base kea-dhcp4-server kamailio baresip-core
      chromium chromium-driver)

apt_setup() {
  local missing=()
  for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >/dev/null
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "note: not root, cannot install ${missing[*]}; tests that need them will skip" >&2
    fi
  fi
}

venv_setup() {
  local extra=$1
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip >/dev/null
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".$extra"
}

check() {
  "$VENV/bin/ruff" check provisioner tests lab
  "$VENV/bin/ruff" format --check provisioner tests lab >/dev/null || {
    echo "ruff format would change files: run $VENV/bin/ruff format provisioner tests lab" >&2
    exit 1
  }
  "$VENV/bin/mypy" provisioner
  "$VENV/bin/pytest" -q --durations=15  # the slowest tests, to keep the suite inside CI's time
}

case "${1:-}" in
  run)
    venv_setup ""
    "$VENV/bin/provisioner" validate inventory/orders/
    "$VENV/bin/provisioner" apply inventory/orders/
    "$VENV/bin/provisioner" orders
    # The main job: serve the sample inventory. Standard ports need root; otherwise high ones.
    if [ "$(id -u)" = 0 ]; then tftp=${TFTP_PORT:-69}; http=${HTTP_PORT:-80}
    else tftp=${TFTP_PORT:-1069}; http=${HTTP_PORT:-8080}; fi
    echo "devices fetch only inside an enrollment window: $VENV/bin/provisioner arm ORDER"
    exec "$VENV/bin/provisioner" serve --tftp-port "$tftp" --http-port "$http"
    ;;
  test)
    apt_setup
    venv_setup "[dev]"
    check
    ;;
  check)
    check
    ;;
  *)
    echo "usage: bash lab/dev.sh run|test|check" >&2
    exit 2
    ;;
esac
