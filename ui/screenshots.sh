#!/usr/bin/env bash
# Regenerates docs/screenshots/: every panel of the real app (login, contact picker, widget, unread
# details, chat, a call, an incoming call and the calls in a chat), light and dark, English and Chinese, driven through WebKitWebDriver under Xvfb; the
# full client's window (pinchat-full) in both languages; and
# the tray icon, its menu and a notification in a real Xfce panel with dunst.
# Needs what `./run test` installs.
set -euo pipefail
cd "$(dirname "$0")/.."
# The tray's own pictures (icon with its count, menu, a notification) are taken in a real Xfce panel.
command -v xfce4-panel >/dev/null || { apt-get update -qq && apt-get install -y --no-install-recommends xfce4-panel; }
PINCHAT_SCREENSHOTS="$PWD/docs/screenshots" cargo xtask test -p pinchat-tests --test desktop -- --ignored --exact screenshots
PINCHAT_SCREENSHOTS="$PWD/docs/screenshots" cargo xtask test -p pinchat-tests --test desktop -- --ignored --exact tray_screenshots
PINCHAT_SCREENSHOTS="$PWD/docs/screenshots" cargo xtask test -p pinchat-tests --test desktop -- --ignored --exact full_client_screenshots
PINCHAT_SCREENSHOTS="$PWD/docs/screenshots" cargo xtask test -p pinchat-tests --test call_panel -- --ignored --exact call_screenshots
ls -l docs/screenshots
