#!/usr/bin/env bash
# The C++ sources against the repository's .clang-format, with the
# clang-format the tree was formatted with: version 14, Debian 12's
# (package clang-format-14; another major formats differently, so it is
# refused rather than trusted). Prints every file that differs and exits 1.
#
#   launch/check-format.sh                      every tracked C++ file (CI)
#   launch/check-format.sh --changed-since REV  the C++ files changed since REV
#   launch/check-format.sh --fix [...]          formats those files in place
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fix=false
since=""
while [ $# -gt 0 ]; do
  case "$1" in
    --fix) fix=true; shift ;;
    --changed-since) since="${2:?--changed-since needs a revision}"; shift 2 ;;
    *) echo "check-format: unknown argument '$1' (expected --fix or --changed-since REV)" >&2; exit 2 ;;
  esac
done
tool=""
for t in clang-format-14 clang-format; do
  if command -v "$t" >/dev/null && "$t" --version | grep -q 'version 14\.'; then tool="$t"; break; fi
done
if [ -z "$tool" ]; then
  echo "check-format: needs clang-format 14 (Debian 12's clang-format-14; launch/install-deps.sh installs it)" >&2
  exit 2
fi
pattern=('*.cpp' '*.h' '*.cc' '*.hpp')
if [ -n "$since" ]; then
  mapfile -t files < <(git diff --name-only --diff-filter=ACMR "$since" -- "${pattern[@]}")
else
  mapfile -t files < <(git ls-files -- "${pattern[@]}")
fi
if $fix; then
  [ ${#files[@]} -eq 0 ] || "$tool" -i "${files[@]}"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  "$tool" --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  printf 'check-format: %s differs from .clang-format\n' "${bad[@]}" >&2
  echo "check-format: ${#bad[@]} of ${#files[@]} files; launch/check-format.sh --fix formats them" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files match .clang-format ($("$tool" --version | grep -o 'version [0-9.]*'))"
