#!/usr/bin/env bash
# What `make test` needs beyond PyPI, installed and started idempotently (quick when present):
# - Debian's Chromium for the browser tests, and Prometheus (promtool inside) for the alert-rule
#   tests and the dashboards' queries;
# - podman serving the Docker Engine API, with the sandbox image built without a registry, so the
#   Docker sandbox backend is tested for real (.ci/podman.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "make test needs these Debian packages: ${missing[*]} (sudo apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  echo "installing ${missing[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$(id -u)" -ne 0 ] && [ -z "${DOCKER_HOST:-}" ]; then
  echo "make test needs a Docker Engine API: run 'sudo bash .ci/podman.sh' (or set DOCKER_HOST and SANDBOX_IMAGE)" >&2
  exit 1
fi
if [ -z "${DOCKER_HOST:-}" ]; then
  bash .ci/podman.sh
fi
