#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages when it is missing and we may
# install packages: chromium (browser tests) and haproxy (scale-out test). Tests that need a
# missing one fail rather than skip, so this says how to get it.
set -eu
missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
  || missing+=(chromium)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} from Debian's packages for the tests..."
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "missing for the tests: ${missing[*]} (e.g. 'sudo apt-get install ${missing[*]}')" >&2
fi
