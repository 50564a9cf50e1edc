#!/bin/sh
# Build (once) the files of the Incus test image from the cached debootstrap rootfs.
#
# Usage: incus_image.sh [ROOTFS] [OUT]
#   ROOTFS  default /var/cache/deployer-tests/rootfs-bookworm (built by build_rootfs.sh,
#           which this script runs when the rootfs is missing)
#   OUT     default /var/cache/deployer-tests/incus-image
#
# Writes OUT/meta.tar (metadata.yaml) and OUT/rootfs.tar (the rootfs with an executable
# /sbin/init that mounts a fresh /run, starts Debian cron and waits), then OUT/.complete
# holding a key of the inputs (rootfs build time + this script's checksum). Idempotent:
# nothing is done while the key matches. Import with
#   incus image import OUT/meta.tar OUT/rootfs.tar --alias deployer-test
# (tests/harness/incus.py does this). The shared rootfs is read, never modified.
# Must run as root (the rootfs has root-only files). Serialized with flock.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOTFS=${1:-/var/cache/deployer-tests/rootfs-bookworm}
OUT=${2:-/var/cache/deployer-tests/incus-image}

if [ "$(id -u)" != 0 ]; then
    echo "incus_image.sh: must run as root" >&2
    exit 1
fi
if [ ! -e "$ROOTFS/.complete" ]; then
    sh "$HERE/build_rootfs.sh" "$ROOTFS"
fi

key="rootfs $(stat -c %Y "$ROOTFS/.complete") script $(sha256sum "$0" | cut -c1-16)"
if [ -e "$OUT/.complete" ] && [ "$(cat "$OUT/.complete")" = "$key" ]; then
    exit 0
fi

mkdir -p "$(dirname "$OUT")"
if command -v flock >/dev/null 2>&1 && [ -z "${INCUS_IMAGE_LOCKED:-}" ]; then
    export INCUS_IMAGE_LOCKED=1
    exec flock "$OUT.lock" sh "$0" "$ROOTFS" "$OUT"
fi
if [ -e "$OUT/.complete" ] && [ "$(cat "$OUT/.complete")" = "$key" ]; then
    exit 0  # built by another process while we waited for the lock
fi

start=$(date +%s)
TMP="$OUT.tmp"
rm -rf "$TMP"
mkdir -p "$TMP/extra/usr/sbin"

# /sbin/init (= /usr/sbin/init: /sbin is a symlink in bookworm). No systemd: a fresh /run,
# Debian cron in the foreground in the background, and a wait loop that reaps orphans and
# ends on SIGPWR/SIGTERM (what `incus stop` sends), stopping cron first.
cat > "$TMP/extra/usr/sbin/init" <<'EOF'
#!/bin/sh
# init of the deployer Incus test image: cron, then nothing.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run 2>/dev/null || true
mkdir -p /run/lock && chmod 1777 /run/lock
cron -f -L 15 </dev/null >>/var/log/cron.console 2>&1 &
CRON=$!
stop() {
    kill -TERM "$CRON" 2>/dev/null
    exit 0
}
trap stop PWR TERM INT
while :; do
    sleep 3600 &
    wait $!
done
EOF
chmod 0755 "$TMP/extra/usr/sbin/init"

cat > "$TMP/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  description: deployer test image (Debian bookworm minbase, cron, python3, sudo)
  os: debian
  release: bookworm
  variant: deployer-test
  deployer.key: "$key"
templates: {}
EOF
tar -C "$TMP" -cf "$TMP/meta.tar" metadata.yaml

# The rootfs without device nodes (Incus makes /dev), docs, manuals and translations,
# then our init appended. Not compressed: with the dir storage driver every launch unpacks
# the image, and gunzip made launches 1.5-3x slower here (143 MB on disk, once).
tar -C "$ROOTFS" --numeric-owner --xattrs \
    --exclude=./.complete --exclude='./dev/*' --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' \
    --exclude='./usr/share/locale/*' --exclude='./var/cache/apt/*' --exclude=./usr/sbin/init \
    -cf "$TMP/rootfs.tar" .
tar -C "$TMP/extra" --numeric-owner --owner=0 --group=0 -rf "$TMP/rootfs.tar" ./usr/sbin/init

mkdir -p "$OUT"
rm -f "$OUT/rootfs.tar.gz"
mv "$TMP/meta.tar" "$TMP/rootfs.tar" "$OUT/"
rm -rf "$TMP"
printf '%s\n' "$key" > "$OUT/.complete"
echo "incus_image.sh: built $OUT in $(( $(date +%s) - start )) s ($(du -sh "$OUT/rootfs.tar" | cut -f1))" >&2
