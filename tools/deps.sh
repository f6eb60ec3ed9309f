#!/usr/bin/env bash
# The Debian 12 packages weft needs to build and test, installed when
# missing: `bash tools/deps.sh` (as root). Sourced by quickstart.sh and
# .ci/run.
WEFT_DEBS=(
  build-essential pkg-config meson ninja-build
  libuv1-dev libyaml-dev libpng-dev zlib1g-dev libjansson-dev
  libxxhash-dev libopenblas-dev libssl-dev
  clang libclang-rt-dev            # fuzz targets, sanitizers
)
# Only the tests need these (tools/test.sh installs them).
WEFT_TEST_DEBS=(
  slurm-wlm                        # tests/slurm: a real one-node Slurm array
)

# weft_install_deps [test]: the build's packages (and the tests' with "test")
weft_install_deps() {
  local missing=() want=("${WEFT_DEBS[@]}")
  [ "${1:-}" = test ] && want+=("${WEFT_TEST_DEBS[@]}")
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
  $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends "${missing[@]}"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  weft_install_deps "$@"
fi
