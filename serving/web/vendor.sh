#!/bin/sh
# Re-vendor hls.js from the npm registry: the pinned tarball, checked against its published
# integrity, reduced to the light build and its licence. The output is committed, so serving
# the player (and `make demo`) needs no npm; run this only to change the pinned version.
set -eu
VERSION=1.7.4
INTEGRITY=sha512-3GlxGdPvT2YHvQYOt+yOzT/DEior/qJVNIylHA77kgeoBTdQQqi70GwefNEUmHQeNGyjC8U62+bruqW/Tpm+tg==
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
npm pack --silent "hls.js@$VERSION" >/dev/null
TARBALL=hls.js-$VERSION.tgz
GOT="sha512-$(openssl dgst -sha512 -binary "$TARBALL" | base64 -w0)"
if [ "$GOT" != "$INTEGRITY" ]; then
    echo "hls.js $VERSION: integrity $GOT, expected $INTEGRITY" >&2
    exit 1
fi
tar -xzf "$TARBALL" package/dist/hls.light.min.js package/LICENSE
mkdir -p "$HERE/vendor"
cp package/dist/hls.light.min.js "$HERE/vendor/hls.light.min.js"
cp package/LICENSE "$HERE/vendor/hls.js.LICENSE"
printf 'hls.js %s %s\n' "$VERSION" "$INTEGRITY" > "$HERE/vendor/VERSION"
echo "vendored hls.js $VERSION into $HERE/vendor"
