#!/bin/sh
# The SDK works from an installed weft: install this build into a staging
# directory, build plugins/canny there with nothing but `pkg-config weft`
# and a C compiler (both its Makefile and its meson project), and run the
# staged weft with the plugin on a graph.  Usage: test_sdk.sh BUILDDIR SRCDIR
set -eu
build=$1
src=$2
stage=$(mktemp -d "${TMPDIR:-/tmp}/weft-sdk-XXXXXX")
trap 'rm -rf "$stage"' EXIT
meson install -C "$build" --destdir "$stage" --no-rebuild >"$stage/install.log" 2>&1 ||
  { cat "$stage/install.log"; exit 1; }
pc=$(find "$stage" -name weft.pc | head -n 1)
[ -n "$pc" ] || { echo "weft.pc was not installed"; exit 1; }
weft=$(find "$stage" -path '*/bin/weft' | head -n 1)
[ -x "$weft" ] || { echo "the weft binary was not installed"; exit 1; }
for h in weft.h plugin.h error.h; do
  find "$stage" -path "*/include/weft/$h" | grep -q . ||
    { echo "header weft/$h was not installed"; exit 1; }
done
export PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$stage
pkg-config --cflags weft | grep -q -- "-I$stage" ||
  { echo "pkg-config weft gives no include path into the stage"; exit 1; }

# 1. plain make
cp -r "$src/plugins/canny" "$stage/canny-make"
make -s -C "$stage/canny-make" >/dev/null
nm -D --defined-only "$stage/canny-make/canny.so" | grep -q ' weft_plugin_entry$' ||
  { echo "canny.so does not export weft_plugin_entry"; exit 1; }
if ldd "$stage/canny-make/canny.so" | grep -q libweft; then
  echo "canny.so links libweft; a plugin must not"; exit 1
fi

# 2. its own meson project, installed into the staged plugin directory
cp -r "$src/plugins/canny" "$stage/canny-meson"
plugindir=$stage$(pkg-config --variable=plugindir weft | sed "s|^$stage||")
(cd "$stage/canny-meson" && meson setup b -Dplugindir="$plugindir" >/dev/null &&
  ninja -C b >/dev/null && ninja -C b install >/dev/null)
[ -f "$plugindir/canny.so" ] || { echo "canny.so not installed in $plugindir"; exit 1; }

# 3. the staged weft finds its own plugins and the installed canny
"$weft" nodes Canny | grep -q "low_threshold" || { echo "weft nodes Canny failed"; exit 1; }
"$weft" nodes LoadImage >/dev/null || { echo "staged weft lacks its image plugin"; exit 1; }
cat >"$stage/edges.yaml" <<YAML
version: 1
nodes:
  load: {op: LoadImage, params: {image: $src/tests/fixtures/images/photo.png}}
  edges: {op: Canny, inputs: {image: load.IMAGE}}
  save: {op: SaveImage, inputs: {images: edges.IMAGE}, params: {filename_prefix: edges}}
outputs: {file: save.files}
YAML
out=$("$weft" run "$stage/edges.yaml" --output-dir "$stage/out" -q)
[ -s "$stage/out/edges_00001_.png" ] || { echo "no edges image written ($out)"; exit 1; }
# the Makefile build loads the same way through --plugin-dir
rm "$plugindir/canny.so"
"$weft" run "$stage/edges.yaml" --output-dir "$stage/out2" -q \
  --plugin-dir "$stage/canny-make" >/dev/null
[ -s "$stage/out2/edges_00001_.png" ] || { echo "--plugin-dir build failed"; exit 1; }
echo "sdk ok"
