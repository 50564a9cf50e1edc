#!/bin/sh
# Build (once) the shared Debian bookworm rootfs used by tests/harness/hosts.py, or a pristine
# Debian system for the `fresh` tier (tests/harness/pristine.py).
#
# Usage: build_rootfs.sh [DIR]        (default DIR: /var/cache/deployer-tests/rootfs-bookworm)
#        DEPLOYER_TEST_PRISTINE=1 DEPLOYER_TEST_SUITE=trixie build_rootfs.sh DIR
#            a stock system: minbase with python3 and nothing else, apt sources in deb822 form
#            only (/etc/apt/sources.list.d/debian.sources, as Debian's own images have them)
#
# Idempotent: if DIR/.complete exists nothing is done.  Otherwise debootstrap runs into
# DIR.tmp (a leftover DIR.tmp from an interrupted run is removed first), and only a finished
# tree is renamed to DIR and marked with DIR/.complete.  The Debian mirror is the one apt on
# this machine uses (read from /etc/apt/sources.list and /etc/apt/sources.list.d/*), falling
# back to http://deb.debian.org/debian.  Installs debootstrap with apt-get if it is missing.
# Must run as root.  Environment overrides: DEPLOYER_TEST_MIRROR, DEPLOYER_TEST_SUITE.
set -eu

DIR=${1:-/var/cache/deployer-tests/rootfs-bookworm}
SUITE=${DEPLOYER_TEST_SUITE:-bookworm}
PRISTINE=${DEPLOYER_TEST_PRISTINE:-}
if [ -n "$PRISTINE" ]; then INCLUDE=python3; else INCLUDE=cron,openssh-server,iproute2,python3,sudo; fi

if [ -e "$DIR/.complete" ]; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "build_rootfs.sh: must run as root" >&2
    exit 1
fi

# Print the first Debian (non-security) mirror URI apt is configured with.
find_mirror() {
    {
        # deb822 sources: remember URIs and Suites of each stanza, print URI when the
        # stanza lists the plain suite (e.g. "bookworm", not only "bookworm-security").
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            awk -v suite="$SUITE" '
                function flush() {
                    if (uris != "" && types ~ /(^|[ \t])deb([ \t]|$)/) {
                        n = split(suites, s, /[ \t]+/)
                        for (i = 1; i <= n; i++) if (s[i] == suite) {
                            split(uris, u, /[ \t]+/); print u[1]; break
                        }
                    }
                    uris = ""; suites = ""; types = ""
                }
                /^[ \t]*$/ { flush(); next }
                /^[ \t]*#/ { next }
                /^URIs:/   { sub(/^URIs:[ \t]*/, ""); uris = $0 }
                /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
                /^Types:/  { sub(/^Types:[ \t]*/, ""); types = $0 }
                END { flush() }
            ' "$f"
        done
        # One-line sources: "deb [opts] URI SUITE COMPONENTS..."
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            awk -v suite="$SUITE" '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) print $i
                }
            ' "$f"
        done
    } | grep -v -- '-security' | head -n 1
}

# The mirror apt uses for this suite; else the one it uses for bookworm (it serves them all).
MIRROR=${DEPLOYER_TEST_MIRROR:-$(find_mirror || true)}
[ -n "$MIRROR" ] || MIRROR=$(SUITE=bookworm find_mirror || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "build_rootfs.sh: installing debootstrap" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
fi

mkdir -p "$(dirname "$DIR")"
# Another process may hold a lock on the same DIR: serialize with flock when available.
LOCK="$DIR.lock"
if command -v flock >/dev/null 2>&1 && [ -z "${BUILD_ROOTFS_LOCKED:-}" ]; then
    export BUILD_ROOTFS_LOCKED=1
    exec flock "$LOCK" sh "$0" "$DIR"
fi
[ -e "$DIR/.complete" ] && exit 0

TMP="$DIR.tmp"
if [ -e "$TMP" ]; then
    # Leftover from an interrupted run.  Make sure nothing is still mounted below it.
    if grep -q " $TMP/" /proc/self/mounts 2>/dev/null; then
        echo "build_rootfs.sh: $TMP has mounts below it; refusing to remove" >&2
        exit 1
    fi
    rm -rf "$TMP"
fi
if [ -e "$DIR" ]; then
    # DIR exists but is not marked complete: an interrupted rename/touch. Rebuild.
    if grep -q " $DIR/" /proc/self/mounts 2>/dev/null; then
        echo "build_rootfs.sh: $DIR is incomplete but has mounts below it" >&2
        exit 1
    fi
    rm -rf "$DIR"
fi

echo "build_rootfs.sh: debootstrap $SUITE from $MIRROR into $TMP" >&2
start=$(date +%s)
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$TMP" "$MIRROR"
# Keep the rootfs small and free of per-machine state; hosts.py generates its own keys.
rm -f "$TMP"/etc/ssh/ssh_host_*
rm -rf "$TMP"/var/cache/apt/archives/*.deb "$TMP"/var/lib/apt/lists/*
if [ -n "$PRISTINE" ]; then
    rm -f "$TMP"/etc/apt/sources.list
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$MIRROR" "$SUITE" "$SUITE" "${DEPLOYER_TEST_SECURITY_MIRROR:-http://deb.debian.org/debian-security}" "$SUITE" \
        > "$TMP"/etc/apt/sources.list.d/debian.sources
fi
mv "$TMP" "$DIR"
touch "$DIR/.complete"
echo "build_rootfs.sh: done in $(( $(date +%s) - start )) s: $DIR" >&2
