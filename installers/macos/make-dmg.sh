#!/usr/bin/env bash
# Builds the shipped pinchat DMG. Runs on macOS only (it needs Xcode's linker, codesign and hdiutil):
#
#   installers/macos/make-dmg.sh                  # unsigned DMG, for testing
#   SIGN_IDENTITY="Developer ID Application: …" NOTARY_PROFILE=pinchat installers/macos/make-dmg.sh
#
# It builds the three programs for Apple silicon and Intel, joins them with lipo, lets
# `cargo xtask package macos` lay out pinchat.app exactly as the Linux check does, signs it with the
# hardened runtime and the entitlements next to this script, writes a compressed DMG with an
# Applications link, and (with NOTARY_PROFILE, a `xcrun notarytool store-credentials` profile)
# notarises and staples it.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(uname -s)" != Darwin ]; then
  echo "make-dmg.sh: this builds the shipped DMG on macOS; on Linux use: cargo xtask package macos" >&2
  exit 2
fi

version=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "pinchat-ui"))')
out=target/macos
universal=$out/universal
mkdir -p "$universal"

for arch in aarch64-apple-darwin x86_64-apple-darwin; do
  rustup target add "$arch" >/dev/null
  cargo build --locked --profile dist --target "$arch" --no-default-features \
    -p pinchat-ui --bin pinchat -p pinchat-daemon --bin pinchatd -p pinchatctl --bin pinchatctl \
    -p pinchat-full --bin pinchat-full
done
for bin in pinchat pinchatd pinchatctl pinchat-full; do
  lipo -create -output "$universal/$bin" \
    "target/aarch64-apple-darwin/dist/$bin" "target/x86_64-apple-darwin/dist/$bin"
done

cargo xtask package macos --bin-dir "$universal"
app=$out/pinchat.app

if [ -n "${SIGN_IDENTITY:-}" ]; then
  # Helpers first, then the bundle: each executable carries the hardened runtime.
  for bin in pinchatd pinchatctl pinchat-full pinchat; do
    codesign --force --timestamp --options runtime \
      --entitlements installers/macos/entitlements.plist \
      --sign "$SIGN_IDENTITY" "$app/Contents/MacOS/$bin"
  done
  codesign --force --timestamp --options runtime \
    --entitlements installers/macos/entitlements.plist --sign "$SIGN_IDENTITY" "$app"
  codesign --verify --strict --verbose=2 "$app"
else
  echo "make-dmg.sh: SIGN_IDENTITY is not set: the DMG is unsigned (Gatekeeper will refuse it on other Macs)" >&2
fi

staging=$out/dmg
rm -rf "$staging"
mkdir -p "$staging"
cp -R "$app" "$staging/"
ln -s /Applications "$staging/Applications"
dmg=$out/pinchat-$version.dmg
rm -f "$dmg"
hdiutil create -volname pinchat -srcfolder "$staging" -format UDZO -ov "$dmg"

if [ -n "${SIGN_IDENTITY:-}" ]; then
  codesign --force --timestamp --sign "$SIGN_IDENTITY" "$dmg"
fi
if [ -n "${NOTARY_PROFILE:-}" ]; then
  xcrun notarytool submit "$dmg" --keychain-profile "$NOTARY_PROFILE" --wait
  xcrun stapler staple "$dmg"
fi
echo "$dmg"
