#!/usr/bin/env bash
# Builds weft and runs the whole test suite three ways: a normal build, an
# ASan+UBSan build, and the libFuzzer targets (clang) for a bounded time.
# Ends with the line "N passed, N failed", counted from meson's test logs.
#   bash tools/test.sh            everything
#   bash tools/test.sh --quick    the normal build only
set -u
cd "$(dirname "$0")/.."
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
# what is missing, as root (a fresh machine); otherwise say what would be
source tools/deps.sh
if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null; then
  weft_install_deps test || echo "warning: could not install every package"
fi
quick=0
[ "${1:-}" = "--quick" ] && quick=1
fuzz_seconds=${WEFT_FUZZ_SECONDS:-60}
logs=()
build_failures=0

# suite DIR [meson options...]: configure (once), build, test
suite() {
  local dir=$1
  shift
  echo "=== $dir: $*"
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || {
      cat "$dir.setup.log"
      echo "$dir: meson setup failed"
      build_failures=$((build_failures + 1))
      return
    }
  fi
  if ! ninja -C "$dir"; then
    echo "$dir: build failed"
    build_failures=$((build_failures + 1))
    return
  fi
  rm -f "$dir/meson-logs/testlog.json"
  meson test -C "$dir" --print-errorlogs -q
  logs+=("$dir/meson-logs/testlog.json")
}

suite build
if [ $quick -eq 0 ]; then
  suite build-asan -Db_sanitize=address,undefined -Db_lundef=false \
    --buildtype=debugoptimized
  if command -v clang >/dev/null; then
    CC=clang suite build-fuzz -Dfuzz=enabled -Db_sanitize=address,undefined \
      -Db_lundef=false -Dfuzz_seconds="$fuzz_seconds" -Dcuda=disabled
  fi
fi

passed=0
failed=$build_failures
skipped=0
for log in "${logs[@]}"; do
  [ -f "$log" ] || { failed=$((failed + 1)); continue; }
  p=$(grep -cE '"result": "(OK|EXPECTEDFAIL)"' "$log")
  f=$(grep -cE '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log")
  s=$(grep -cE '"result": "SKIP"' "$log")
  passed=$((passed + p))
  failed=$((failed + f))
  skipped=$((skipped + s))
done
echo "skipped: $skipped"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
