#!/usr/bin/env bash
# Build a minimal root filesystem tarball containing the host's CPython
# (stdlib + lib-dynload + exactly the shared libraries ldd reports), with no
# registry access at all. Import it with:
#   podman import rootfs.tar coderunner-python-base
#
# Usage: deploy/sandbox/rootfs.sh OUT.tar   (default: ./coderunner-rootfs.tar)
# Env:   PYTHON=/usr/bin/python3.11  (interpreter to copy)
set -euo pipefail

OUT=${1:-coderunner-rootfs.tar}
PYTHON=${PYTHON:-/usr/bin/python3.11}

PYBIN=$(readlink -f "$PYTHON")
PYVER=$("$PYBIN" -c 'import sys;print("%d.%d" % sys.version_info[:2])')
STDLIB=$("$PYBIN" -c 'import sysconfig;print(sysconfig.get_paths()["stdlib"])')
DYNLOAD=$("$PYBIN" -c 'import sysconfig,os;print(os.path.join(sysconfig.get_paths()["stdlib"],"lib-dynload"))')
SH=$(command -v dash || command -v sh)

ROOT=$(mktemp -d /tmp/coderunner-rootfs.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT

# Merged-/usr layout, like Debian 12 / python:*-slim.
mkdir -p "$ROOT"/usr/{bin,lib,lib64,sbin} "$ROOT"/{etc,tmp,proc,sys,dev,root,home,var/tmp,run}
ln -s usr/bin "$ROOT/bin"
ln -s usr/sbin "$ROOT/sbin"
ln -s usr/lib "$ROOT/lib"
ln -s usr/lib64 "$ROOT/lib64"
chmod 1777 "$ROOT/tmp" "$ROOT/var/tmp"
chmod 700 "$ROOT/root"

# Copy a file to its canonical (symlink-resolved directory) location in ROOT,
# and recreate the path it was referenced by if that differs.
copy_file() {
    local src=$1 real dst
    real=$(readlink -f "$src")
    dst="$ROOT$(readlink -f "$(dirname "$src")")/$(basename "$src")"
    [ -e "$dst" ] && return 0
    mkdir -p "$(dirname "$dst")"
    cp -L --preserve=mode "$real" "$dst"
}

# Interpreter + shell.
cp --preserve=mode "$PYBIN" "$ROOT/usr/bin/python$PYVER"
ln -s "python$PYVER" "$ROOT/usr/bin/python3"
ln -s "python$PYVER" "$ROOT/usr/bin/python"
cp --preserve=mode "$(readlink -f "$SH")" "$ROOT/usr/bin/sh"

# Stdlib, minus the static libpython/config dir, tests and GUI/IDE bits.
mkdir -p "$ROOT$STDLIB"
tar -C "$STDLIB" \
    --exclude='./config-*' --exclude='./test' --exclude='./idlelib' \
    --exclude='./tkinter' --exclude='./turtledemo' --exclude='./ensurepip' \
    --exclude='./lib2to3/tests' --exclude='./site-packages' --exclude='./dist-packages' \
    -cf - . | tar -C "$ROOT$STDLIB" -xf -

# Shared libraries for the interpreter, every extension module and the shell.
libs=$(
    { ldd "$PYBIN"; ldd "$SH"; for so in "$DYNLOAD"/*.so; do ldd "$so"; done; } 2>/dev/null \
        | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u
)
for lib in $libs; do
    copy_file "$lib"
done

# Minimal identity/config files (uid 1000 is added by the Dockerfile).
cat > "$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat > "$ROOT/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo 'hosts: files' > "$ROOT/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$ROOT/etc/hosts"
: > "$ROOT/etc/resolv.conf"

# Sanity check: the copied interpreter runs inside the tree (if chroot works).
if command -v chroot >/dev/null 2>&1; then
    chroot "$ROOT" /usr/bin/python3 -I -c 'import ssl, sqlite3, ctypes, json, decimal, zlib, lzma, bz2; print("rootfs ok")' \
        || { echo "rootfs sanity check failed" >&2; exit 1; }
fi

mkdir -p "$(dirname "$OUT")"
tar --numeric-owner --owner=0 --group=0 -C "$ROOT" -cf "$OUT" .
echo "wrote $OUT ($(du -h "$OUT" | cut -f1)) python=$PYVER"
