#!/usr/bin/env bash
# Regenerates docs/screenshots/: every panel of the real app (login, contact picker, widget, unread
# details, chat), light and dark, English and Chinese, driven through WebKitWebDriver under Xvfb.
# Needs what `./run test` installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PINCHAT_SCREENSHOTS="$PWD/docs/screenshots" cargo xtask test -p pinchat-tests --test desktop -- --ignored --exact screenshots
ls -l docs/screenshots
