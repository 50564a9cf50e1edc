#!/usr/bin/env bash
# Install deployer on this machine, in a virtual environment of its own.
#
#   ./install.sh              deployer (and ansible-core) in its own venv, `deployer` on the PATH;
#                             apt: cron (the `crontab` command) and python3-venv when missing
#   ./install.sh --test       what the test tiers need (cron, sshd, sudo, debootstrap, iproute2,
#                             gcc, dpkg-dev, prometheus and its node exporter and alertmanager, apprise, incus)
#                             and the development venv ./.venv: deployer editable, with
#                             the test extras; tests/run calls this
#   ./install.sh --uninstall  removes the venv and the `deployer` link (your data stays)
#
# Where it goes:
#   root:      /opt/deployer (the venv), /usr/local/bin/deployer (a link)
#   any other: ~/.local/share/deployer/venv, ~/.local/bin/deployer
# Environment: PYTHON (default python3), DEPLOYER_VENV and DEPLOYER_BIN_DIR to choose the folders.
#
# Safe to run again: apt installs only what is missing, the venv is reused and deployer
# reinstalled from this checkout. Never touches the system Python's packages (PEP 668).
# Every step that fails says which it was, shows the end of its output and what to do, and
# exits non-zero.
set -euo pipefail
cd "$(dirname "$0")"
REPO=$(pwd)

mode=user
case "${1:-}" in
  "") ;;
  --test) mode=test ;;
  --uninstall) mode=uninstall ;;
  -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "install.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac

say() { echo "install.sh: $*"; }
LOG=$(mktemp "${TMPDIR:-/tmp}/deployer-install.XXXXXX")
trap 'rm -f "$LOG"' EXIT

# step "what" "what to do if it fails" command...: runs the command with its output in $LOG;
# on failure, names the step, shows the end of the output and the advice, and exits 1.
step() {
  local what=$1 advice=$2
  shift 2
  say "$what"
  local rc=0
  "$@" >"$LOG" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    {
      echo "install.sh: FAILED: $what (exit $rc)."
      echo "--- last lines of its output:"
      grep -v -e "^WARNING: Running pip as the 'root' user" "$LOG" | tail -n 15 | sed 's/^/    /'
      echo "--- what to do: $advice"
    } >&2
    exit 1
  fi
}

fail() {  # fail "what went wrong" "what to do"
  echo "install.sh: FAILED: $1" >&2
  echo "--- what to do: $2" >&2
  exit 1
}

if [ "$(id -u)" = 0 ]; then
  SUDO=()
  VENV=${DEPLOYER_VENV:-/opt/deployer}
  BIN_DIR=${DEPLOYER_BIN_DIR:-/usr/local/bin}
else
  SUDO=(sudo -n)
  VENV=${DEPLOYER_VENV:-$HOME/.local/share/deployer/venv}
  BIN_DIR=${DEPLOYER_BIN_DIR:-$HOME/.local/bin}
fi
LINK="$BIN_DIR/deployer"

if [ "$mode" = uninstall ]; then
  if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$VENV/bin/deployer" ]; then
    rm -f "$LINK" && say "removed $LINK"
  fi
  if [ -x "$VENV/bin/python" ] && [ -f "$VENV/pyvenv.cfg" ]; then
    rm -rf "$VENV" && say "removed $VENV"
  fi
  say "deployer is uninstalled. Your crontabs and deployer's state on targets stay; 'deployer destroy ENV' (before uninstalling) removes the jobs."
  exit 0
fi

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null ||
  fail "no '$PYTHON' on this machine" "install Python 3.11 or newer (Debian: apt-get install python3), or set PYTHON=/path/to/python3"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  fail "$("$PYTHON" --version 2>&1) is too old: deployer needs Python 3.11 or newer" \
       "install a newer Python (Debian 12 and later have it) and run PYTHON=/path/to/python3.11 ./install.sh"

# --- system packages (apt) ------------------------------------------------------------------
apt_missing() {  # prints the packages of "$@" that dpkg does not have installed
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

apt_updated=0
apt_install() {  # apt_install WHY PACKAGE... (only the missing ones; root or sudo without a password)
  local why=$1
  shift
  local missing
  missing=$(apt_missing "$@" | tr '\n' ' ')
  missing=${missing% }
  [ -n "$missing" ] || return 0
  if ! command -v apt-get >/dev/null; then
    fail "$why needs: $missing, and this machine has no apt-get" "install them with this system's package manager, then run ./install.sh again"
  fi
  if [ "${#SUDO[@]}" -gt 0 ] && ! sudo -n true 2>/dev/null; then
    fail "$why needs the Debian packages: $missing (root is needed to install them)" \
         "ask an administrator to run: apt-get install $missing; or run ./install.sh as root"
  fi
  if [ "$apt_updated" = 0 ]; then
    step "apt-get update" "check this machine's apt sources (/etc/apt/sources.list.d/) and that it reaches its Debian mirror" \
      "${SUDO[@]}" apt-get update -q
    apt_updated=1
  fi
  step "apt-get install $missing" "see apt's message above; 'apt-get install $missing' by hand shows the whole story" \
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
}

# The test tiers' packages. Incus: the daemon's package without qemu (containers only); on
# Debian 12 it is in bookworm-backports, which is added (same mirror as bookworm) if absent.
if [ "$mode" = test ]; then
  [ "$(id -u)" = 0 ] || fail "./install.sh --test installs system packages and test users' tools" "run it (or tests/run) as root"
  # gcc, libc6-dev, dpkg-dev: the oracle tier builds Debian cron's own code (apt-get source)
  # busybox-static: a fleet test host runs busybox's crond instead of Debian's cron
  # prometheus (promtool), prometheus-node-exporter: the alerts tier checks the generated rules and scrapes the metrics;
  # prometheus-alertmanager: it sees one of those rules fire and resolve end to end, through a webhook
  # apprise: the alerts tier sends through Debian's apprise program (the apprise channel)
  apt_install "the test tiers" cron openssh-server openssh-client sudo debootstrap iproute2 util-linux procps git \
    gcc libc6-dev dpkg-dev busybox-static prometheus prometheus-node-exporter prometheus-alertmanager apprise
  # shellcheck disable=SC1091
  . /etc/os-release
  if [ -n "$(apt_missing incus-base)" ]; then
    incus_target=()
    if [ "${VERSION_CODENAME:-}" = bookworm ]; then
      incus_target=(-t bookworm-backports)
      if ! grep -rqs -E '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        # The mirror apt already uses for bookworm, from whichever sources file names it.
        mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
                 sed -n -e 's|^URIs: *\(https\?://[^ ]*/debian\)/*$|\1|p' \
                        -e 's|^deb \(https\?://[^ ]*/debian\)/* bookworm .*|\1|p' | head -n 1 || true)
        mirror=${mirror:-http://deb.debian.org/debian}
        say "adding bookworm-backports ($mirror) for incus"
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
          "$mirror" > /etc/apt/sources.list.d/bookworm-backports.sources
      fi
    fi
    step "apt-get update (for incus)" "check this machine's apt sources and that it reaches its Debian mirror" apt-get update -q
    step "apt-get install ${incus_target[*]} incus-base" \
      "incus is in bookworm-backports (Debian 12) and in main from Debian 13; 'apt-get install ${incus_target[*]} incus-base' shows apt's whole message" \
      env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${incus_target[@]}" incus-base
  fi
else
  apt_install "deployer (the crontab command)" cron
fi

# --- the virtual environment ----------------------------------------------------------------
[ "$mode" = test ] && VENV="$REPO/.venv"

venv_works() { [ -x "$1/bin/python" ] && "$1/bin/python" -m pip --version >/dev/null 2>&1; }

if ! venv_works "$VENV"; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  # Debian's python3 has the venv module, but without python3-venv no pip to put in one.
  if ! "$PYTHON" -m venv "$VENV" >"$LOG" 2>&1; then
    rm -rf "$VENV"
    command -v apt-get >/dev/null && apt_install "a virtual environment for deployer" python3-venv
  fi
  venv_works "$VENV" || step "create the virtual environment $VENV" \
    "'$PYTHON -m venv $VENV' by hand shows why; on Debian/Ubuntu: apt-get install python3-venv" \
    "$PYTHON" -m venv --clear "$VENV"
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
pip_advice="check that this machine reaches the Python package index (pip's index-url, a proxy: PIP_INDEX_URL, HTTPS_PROXY, PIP_CERT), then run ./install.sh again"
if [ "$mode" = test ]; then
  step "pip install -e '.[test]' into $VENV" "$pip_advice" "${PIP[@]}" install -e "$REPO[test]"
else
  step "pip install deployer into $VENV" "$pip_advice" "${PIP[@]}" install "$REPO"
fi
step "check: deployer --version" "the install above did not give a working deployer: run '$VENV/bin/deployer --version' to see why" \
  "$VENV/bin/deployer" --version
say "$(cat "$LOG")"

[ "$mode" = test ] && { say "tests use $VENV/bin/python"; exit 0; }

# --- `deployer` on the PATH -------------------------------------------------------------------
mkdir -p "$BIN_DIR"
if [ -e "$LINK" ] && ! [ -L "$LINK" ]; then
  fail "$LINK exists and is not a link this script made" "move it away (or set DEPLOYER_BIN_DIR), then run ./install.sh again"
fi
ln -sfn "$VENV/bin/deployer" "$LINK"
say "deployer is $LINK -> $VENV/bin/deployer (uninstall: ./install.sh --uninstall)"
say "Ansible: the playbooks run with $VENV/bin/ansible-playbook, which sees deployer's plugins"

found=$(command -v deployer || true)
if [ "$found" != "$LINK" ]; then
  if [ -z "$found" ]; then
    # Debian's ~/.profile puts ~/.local/bin on the PATH of login shells once it exists.
    echo "install.sh: $BIN_DIR is not on this shell's PATH yet (a new login shell has it on Debian)." >&2
  else
    echo "install.sh: 'deployer' on this shell's PATH is $found, not the one just installed ($LINK)." >&2
  fi
  echo "--- what to do: run   export PATH=\"$BIN_DIR:\$PATH\"   then deployer is this one here too." >&2
  exit 3
fi
