#!/usr/bin/env bash
# need-debian-package.sh COMMAND PACKAGE [optional]: install Debian's PACKAGE when COMMAND is missing
# (as root, with apt-get). On failure, apt's own error is printed; "optional" makes it a warning.
set -uo pipefail
command_name=$1 package=$2 optional=${3:-}
if command -v "$command_name" >/dev/null || ls /usr/lib/postgresql/*/bin/"$command_name" >/dev/null 2>&1; then
  exit 0
fi
why="not root, or no apt-get"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if out=$(apt-get update -qq 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" 2>&1); then
    exit 0
  fi
  why="apt-get failed: $(printf '%s\n' "$out" | grep -E '^(E|W):' | tail -3 | tr '\n' ' ')"
  [ -n "${why#apt-get failed: }" ] || why="apt-get failed: $(printf '%s\n' "$out" | tail -3 | tr '\n' ' ')"
fi
if [ "$optional" = optional ]; then
  echo "$package is not installed ($why): the tests that need it will skip" >&2
  exit 0
fi
echo "$package is needed and not installed ($why); install it: apt-get install $package" >&2
exit 1
