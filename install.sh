#!/usr/bin/env bash
# Install deployer and what it needs on this machine.
#
#   ./install.sh          the tool: the `crontab` command (Debian's cron) and `pip install -e .`
#   ./install.sh --test   also what the test tiers need: cron, sshd, sudo, debootstrap,
#                         iproute2 and the test extras (pytest, hypothesis)
#
# Safe to run again: it installs only what is missing. apt needs root (or sudo).
set -euo pipefail
cd "$(dirname "$0")"

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

packages=(cron python3)
[ "$want_test" = 1 ] && packages+=(openssh-server openssh-client sudo debootstrap iproute2 util-linux procps)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "install.sh: please install: ${missing[*]} (no apt-get here)" >&2
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "install.sh: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The incus tier: the daemon's package (the client and incusd, without qemu: containers only).
# On Debian 12 it comes from bookworm-backports.
if [ "$want_test" = 1 ] && ! dpkg-query -W -f='${Status}' incus-base 2>/dev/null | grep -q "install ok installed"; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  . /etc/os-release
  target=()
  if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    target=(-t bookworm-backports)
    # The same mirror apt already uses for bookworm.
    mirror=$( { sed -n 's|^URIs: *\(https\?://[^ ]*/debian\)/*$|\1|p' /etc/apt/sources.list.d/*.sources 2>/dev/null;
               sed -n 's|^deb \(https\?://[^ ]*/debian\)/* bookworm .*|\1|p' /etc/apt/sources.list 2>/dev/null; } | head -n 1)
    mirror=${mirror:-http://deb.debian.org/debian}
    grep -rqs --include='*.list' --include='*.sources' -E '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ ||
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" |
      $SUDO tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
  fi
  echo "install.sh: apt-get install ${target[*]} incus-base"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${target[@]}" incus-base >/dev/null
fi

PYTHON="${PYTHON:-python3}"
extras=""
[ "$want_test" = 1 ] && extras="[test]"
echo "install.sh: pip install -e .$extras"
"$PYTHON" -m pip install -q --disable-pip-version-check -e ".$extras" 2>&1 | grep -v -e "^WARNING: Running pip as the 'root' user" -e "Location 'file:" || true
"$PYTHON" -m deployer --version
