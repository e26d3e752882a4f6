#!/usr/bin/env bash
# The desktop app's panels: memory of `pinchat` (and every process under it) idle, with one panel open
# and after closing it, and the time from a tray click to the panel's window and to its web process.
# Run through `bench/run panel [--against <git revision>]`: with --against, the same measurements are
# made on that revision's `pinchat` first, side by side (it is built in its own target directory).
#
# `bench/panel.sh [label] [pinchat binary]` measures one build; it runs inside its own
# `xvfb-run -a dbus-run-session` (bench/run sees to it: each build gets a fresh X server and session
# bus, since the first GTK app of a session carries more than later ones) with a StatusNotifierItem host
# and a fresh gnome-keyring; 3 accounts bound, 5 contacts pinned each, the real demo server.
set -euo pipefail
if [ "${1:-}" = --header ]; then
  echo "pinchat with 3 widgets (5 pins each); memory of the app and every process under it, MB: PSS / RSS / private"
  echo "open: ms from the tray click to the panel's window, and to its web process, 5 times"
  printf '%-10s | %-16s | %-16s | %-16s | %s | %s\n' build idle "one panel open" "panel closed" "window (ms)" "web process (ms)"
  exit 0
fi
BIN=target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export WEBKIT_DISABLE_COMPOSITING_MODE=1 WEBKIT_DISABLE_DMABUF_RENDERER=1 LIBGL_ALWAYS_SOFTWARE=1 GDK_BACKEND=x11
export PINCHAT_LANG=en XDG_DATA_HOME="$work/xdg" XDG_CONFIG_HOME="$work/config"
echo -n bench | gnome-keyring-daemon --unlock --components=secrets >/dev/null
status-notifier-watcher >/dev/null 2>&1 &
"$BIN/pinchat-server" demo --data-dir "$work/demo" --listen 127.0.0.1:0 --every 0 >"$work/server.log" 2>&1 &
until grep -q "listening" "$work/server.log" 2>/dev/null; do sleep 0.05; done
url=$(grep -o 'http://127.0.0.1:[0-9]*' "$work/server.log" | head -1)

descendants() { for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
# PSS (shared pages split between the processes that map them), RSS and private memory, in kB, of a
# process and everything under it.
memory() {
  local pss=0 rss=0 anon=0 p v
  for p in "$1" $(descendants "$1"); do
    v=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0); pss=$((pss + ${v:-0}))
    v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0); rss=$((rss + ${v:-0}))
    v=$(awk '/^RssAnon:/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0); anon=$((anon + ${v:-0}))
  done
  echo "$((pss / 1024)) $((rss / 1024)) $((anon / 1024))"
}
panel_open() { xwininfo -root -tree | grep -q '"pinchat — '; }
web_process() { descendants "$1" | while read -r p; do cat "/proc/$p/comm" 2>/dev/null; done | grep -q WebKitWebProces; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

measure() { # label, pinchat binary
  local label=$1 ui=$2 n=$3
  local sock="$work/$n/daemon.sock"
  mkdir -p "$work/$n"
  PINCHAT_SOCKET=$sock PINCHAT_DATA_DIR="$work/$n/data" "$ui" >"$work/$n/ui.log" 2>&1 &
  local app=$!
  until grep -q "tray ready" "$work/$n/ui.log"; do sleep 0.05; done
  for a in demo alice bob; do
    echo demo | PINCHAT_SOCKET=$sock "$BIN/pinchatctl" add --server "$url" --account $a --password-stdin >/dev/null
  done
  for w in $(PINCHAT_SOCKET=$sock "$BIN/pinchatctl" --json list | python3 -c 'import sys,json; [print(x["id"]) for x in json.load(sys.stdin)]'); do
    ids=$(PINCHAT_SOCKET=$sock "$BIN/pinchatctl" --json contacts "$w" | python3 -c 'import sys,json; print(" ".join(str(c["id"]) for c in json.load(sys.stdin)[:5]))')
    # shellcheck disable=SC2086
    PINCHAT_SOCKET=$sock "$BIN/pinchatctl" pin "$w" $ids >/dev/null
  done
  local click=(busctl --user call "org.kde.StatusNotifierItem-$app-1" /StatusNotifierItem org.kde.StatusNotifierItem Activate ii 900 10)
  sleep 3 # settle: the widgets' first snapshots, the tray's first drawing
  read -r idle_pss idle_rss idle_anon < <(memory $app)
  local windows=() webs=() t i
  for i in 1 2 3 4 5; do
    t=$(date +%s%N); "${click[@]}"
    until panel_open; do sleep 0.005; done; windows+=("$(ms "$t")")
    until web_process $app; do sleep 0.005; done; webs+=("$(ms "$t")")
    if [ "$i" = 5 ]; then sleep 3; read -r open_pss open_rss open_anon < <(memory $app); fi
    "${click[@]}"
    while panel_open; do sleep 0.005; done
    sleep 1
  done
  sleep 3 # settle: whatever ends with the panel has ended
  read -r closed_pss closed_rss closed_anon < <(memory $app)
  kill $app; wait $app 2>/dev/null || true
  printf '%-10s | %4s / %4s / %3s | %4s / %4s / %3s | %4s / %4s / %3s | %s | %s\n' "$label" \
    "$idle_pss" "$idle_rss" "$idle_anon" "$open_pss" "$open_rss" "$open_anon" "$closed_pss" "$closed_rss" "$closed_anon" \
    "${windows[*]}" "${webs[*]}"
}

measure "${1:-this}" "${2:-$BIN/pinchat}" run
