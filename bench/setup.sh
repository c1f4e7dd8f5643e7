#!/usr/bin/env bash
# Installs the benchmark's tools from Debian's packages when one is missing:
# nginx (the upstream and the proxy_pass reference), wrk (peak load), h2load (fixed-rate load),
# valgrind (instructions per request, counted by callgrind), taskset (pinning, util-linux).
set -euo pipefail

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "bench: missing ${missing[*]} and no apt-get here; install them by hand" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
echo "bench: installing ${missing[*]}" >&2
$sudo apt-get update -qq
# The benchmark runs its own nginx in the foreground: don't start the packaged service.
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
