#!/usr/bin/env python3
"""A third-party pinchat gadget, with nothing but Python's standard library.

Prints a live one-line status of a widget — its account, and each pinned contact's state and unread
count — and a new line whenever anything changes. It talks to the pinchat daemon's local API (JSON-RPC
2.0, one JSON object per line, over the daemon's socket): see docs/ipc.md.

    python3 examples/gadget.py                 # the first widget
    python3 examples/gadget.py demo            # the widget of account "demo" (or a widget id)
    python3 examples/gadget.py --socket PATH   # another daemon

Linux and macOS (Unix socket). On Windows the API is a named pipe: open it with
`open(r"\\\\.\\pipe\\pinchat-<user>", "r+b", buffering=0)` instead of a socket.
"""

import argparse
import json
import os
import socket
import sys
import tempfile

STATES = {"online": "●", "busy": "●", "idle": "◐", "do_not_disturb": "⊘", "offline": "○"}


def default_socket():
    if os.environ.get("PINCHAT_SOCKET"):
        return os.environ["PINCHAT_SOCKET"]
    if sys.platform == "darwin":
        return os.path.join(tempfile.gettempdir(), "pinchat", "daemon.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "pinchat", "daemon.sock")
    return os.path.join(tempfile.gettempdir(), "pinchat-%d" % os.geteuid(), "daemon.sock")


def check_peer(sock, path):
    """Refuse a socket served by another user before sending anything (docs/ipc.md, Connecting)."""
    if not hasattr(socket, "SO_PEERCRED"):  # macOS: the directory's modes keep others out
        return
    import struct
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    if uid != os.geteuid():
        sock.close()
        raise PermissionError("%s is served by uid %d, not by you; nothing was sent" % (path, uid))


class Daemon:
    """A JSON-RPC connection: call() waits for its answer; notifications seen meanwhile are queued."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        check_peer(self.sock, path)
        self.file = self.sock.makefile("rwb")
        self.next_id = 1
        self.pending = []

    def _read(self):
        line = self.file.readline()
        if not line:
            raise ConnectionError("the daemon closed the connection")
        return json.loads(line)

    def call(self, method, **params):
        request_id = self.next_id
        self.next_id += 1
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        self.file.write(json.dumps(request).encode() + b"\n")
        self.file.flush()
        while True:
            message = self._read()
            if message.get("id") == request_id:
                if "error" in message:
                    error = message["error"]
                    raise RuntimeError("%s: %s" % (error["data"]["code"], error["message"]))
                return message["result"]
            if "method" in message:
                self.pending.append(message)

    def notifications(self):
        while True:
            while self.pending:
                yield self.pending.pop(0)
            yield self._read()


def status_line(widget):
    account = widget["account"]
    parts = ["%s (%s)" % (account["name"], widget["connection"] + (", stale" if widget["stale"] else ""))]
    for pin in widget["pins"]:
        unread = " %d✉" % pin["unread"] if pin["unread"] else ""
        parts.append("%s %s%s" % (STATES.get(pin["state"], "?"), pin["name"], unread))
    return " | ".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("widget", nargs="?", help="widget id or account login (default: the first widget)")
    parser.add_argument("--socket", default=default_socket(), help="the daemon's socket")
    args = parser.parse_args()
    try:
        daemon = Daemon(args.socket)
    except OSError as e:
        sys.exit("cannot reach the pinchat daemon at %s (%s); is pinchatd running?" % (args.socket, e))
    widgets = daemon.call("widget.list")
    chosen = [w for w in widgets if args.widget in (None, w["id"], w["login"])]
    if not chosen:
        sys.exit("no such widget; the daemon has: %s" % (", ".join(w["login"] for w in widgets) or "none"))
    widget_id = chosen[0]["id"]
    daemon.call("subscribe", widgets=[widget_id])
    widget = daemon.call("widget.snapshot", widget=widget_id)
    last = status_line(widget)
    print(last, flush=True)
    for note in daemon.notifications():
        if note.get("method") == "widget.removed":
            print("the widget was removed", flush=True)
            return
        # Every notification may change what the line shows; the snapshot is served from the daemon's
        # memory, so asking for it again is cheap.
        widget = daemon.call("widget.snapshot", widget=widget_id)
        line = status_line(widget)
        if line != last:
            print(line, flush=True)
            last = line


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
