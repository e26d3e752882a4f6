#!/usr/bin/env python3
"""The XMPP half of pinchat's traffic benchmark: a private Prosody instance on loopback, the observer
with every contact in its roster (mutual subscription), the contacts driven through XMPP by slixmpp
replaying pinchat-bench's schedule, and the bytes from Prosody to the observer counted by a TCP proxy.

Runs configuration (c) (a standard client) and (d) (the same after XEP-0352 <inactive/>, handled by
Prosody 0.12's mod_csi_simple), each against a fresh server, and writes their figures as JSON.
Started by `pinchat-bench traffic --xmpp`; needs `prosody` (Debian) and `slixmpp` (PyPI).
"""

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import slixmpp

HOST = "bench.local"
PASSWORD = "bench-password"
SHOW = {"online": None, "busy": "dnd", "idle": "away", "do_not_disturb": "dnd"}
STATUS = {"online": "", "busy": "busy", "idle": "idle", "do_not_disturb": "do not disturb"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lua_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_world(data, contacts):
    """Accounts and rosters in Prosody's internal storage: faster than registering 500 users."""
    host = os.path.join(data, HOST.replace(".", "%2e"))
    os.makedirs(os.path.join(host, "accounts"))
    os.makedirs(os.path.join(host, "roster"))
    users = ["observer"] + ["c%05d" % i for i in range(contacts)]
    for user in users:
        with open(os.path.join(host, "accounts", user + ".dat"), "w") as f:
            f.write("return {\n\t[\"password\"] = %s;\n};\n" % lua_string(PASSWORD))
    with open(os.path.join(host, "roster", "observer.dat"), "w") as f:
        f.write("return {\n\t[false] = { [\"version\"] = 1; [\"pending\"] = {}; };\n")
        for i in range(contacts):
            jid = "c%05d@%s" % (i, HOST)
            f.write("\t[%s] = { [\"subscription\"] = \"both\"; [\"groups\"] = {}; [\"name\"] = %s; };\n"
                    % (lua_string(jid), lua_string("Contact %d" % i)))
        f.write("};\n")
    for i in range(contacts):
        with open(os.path.join(host, "roster", "c%05d.dat" % i), "w") as f:
            f.write("return {\n\t[false] = { [\"version\"] = 1; [\"pending\"] = {}; };\n"
                    "\t[%s] = { [\"subscription\"] = \"both\"; [\"groups\"] = {}; };\n};\n"
                    % lua_string("observer@" + HOST))


def start_prosody(workdir, contacts):
    data = os.path.join(workdir, "data")
    write_world(data, contacts)
    port = free_port()
    config = os.path.join(workdir, "prosody.cfg.lua")
    with open(config, "w") as f:
        f.write("""
daemonize = false
-- CI and benchmark machines run as root; this private instance listens on loopback only.
run_as_root = true
pidfile = %(dir)s .. "/prosody.pid"
data_path = %(data)s
log = { warn = %(dir)s .. "/prosody.log" }
authentication = "internal_plain"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
c2s_ports = { %(port)d }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { }
http_ports = { }
https_ports = { }
modules_enabled = { "roster", "saslauth", "disco", "csi_simple", "ping" }
modules_disabled = { "s2s", "tls" }
VirtualHost "%(host)s"
""" % {"dir": lua_string(workdir), "data": lua_string(data), "port": port, "host": HOST})
    proc = subprocess.Popen(["prosody", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("prosody did not start; see %s/prosody.log" % workdir)


class Proxy:
    """Counts the bytes Prosody sends to the observer."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.down = 0

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def handle(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src, dst, count):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if count:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))


def client(user, port, on_start):
    xmpp = slixmpp.ClientXMPP(
        "%s@%s/bench" % (user, HOST),
        PASSWORD,
        plugin_config={"feature_mechanisms": {"unencrypted_plain": True}},
    )
    # Plain TCP on loopback, like the pinchat side: the bytes counted are XML, not TLS records.
    xmpp.enable_starttls = False
    xmpp.enable_direct_tls = False
    xmpp.enable_plaintext = True
    xmpp.add_event_handler("session_start", on_start)
    xmpp.connect(host="127.0.0.1", port=port)
    return xmpp


async def run(schedule, scale, csi):
    workdir = tempfile.mkdtemp(prefix="pinchat-xmpp-")
    proc, port = start_prosody(workdir, schedule["contacts"])
    try:
        loop = asyncio.get_running_loop()
        # Contacts log in and announce themselves first.
        ready = 0
        all_ready = loop.create_future()
        contacts = []
        for i in range(schedule["contacts"]):
            async def started(_event, i=i):
                nonlocal ready
                contacts[i].send_presence()
                ready += 1
                if ready == schedule["contacts"] and not all_ready.done():
                    all_ready.set_result(None)
            contacts.append(client("c%05d" % i, port, started))
        await asyncio.wait_for(all_ready, 300)

        proxy = Proxy(port)
        proxy_port = await proxy.start()
        seen = set()
        initial_done = loop.create_future()
        m = {"presence_events": 0, "presence_bytes": 0, "messages": 0, "delays_ms": []}
        sent_at = {}
        total_messages = sum(1 for e in schedule["events"] if e.get("seq") is not None)
        finished = loop.create_future()

        async def observer_started(_event):
            await observer.get_roster()
            observer.send_presence()

        observer = client("observer", proxy_port, observer_started)

        def on_presence(presence):
            if initial_done.done():
                m["presence_events"] += 1
                m["presence_bytes"] += len(str(presence).encode())
                return
            seen.add(presence["from"].bare)
            if len(seen) >= schedule["contacts"]:
                initial_done.set_result(None)

        def on_message(msg):
            now = time.monotonic()
            body = msg["body"]
            if body.startswith("m") and body[1:].isdigit() and int(body[1:]) in sent_at:
                m["delays_ms"].append((now - sent_at[int(body[1:])]) * 1000.0)
            m["messages"] += 1
            if m["messages"] >= total_messages and not finished.done():
                finished.set_result(None)

        observer.add_event_handler("presence", on_presence)
        observer.add_event_handler("message", on_message)
        await asyncio.wait_for(initial_done, 300)
        initial = proxy.down
        if csi:
            observer.send_raw("<inactive xmlns='urn:xmpp:csi:0'/>")

        start = time.monotonic()
        ping_every = 30.0 / scale
        next_ping = start + ping_every
        for e in schedule["events"]:
            due = start + e["t"] / scale
            while True:
                now = time.monotonic()
                if now >= next_ping:
                    # What a client does to keep its connection alive (XEP-0199).
                    observer.send_raw("<iq type='get' id='ping%d'><ping xmlns='urn:xmpp:ping'/></iq>" % int(now))
                    next_ping += ping_every
                if now >= due:
                    break
                await asyncio.sleep(min(due, next_ping) - now)
            c = contacts[e["contact"]]
            if e.get("state") is not None:
                c.send_presence(pshow=SHOW[e["state"]], pstatus=STATUS[e["state"]] or None)
            else:
                sent_at[e["seq"]] = time.monotonic()
                c.send_message(mto="observer@" + HOST, mbody="m%d" % e["seq"], mtype="chat")
        end = start + schedule["window_secs"] / scale
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        try:
            await asyncio.wait_for(asyncio.shield(finished), 10)
        except asyncio.TimeoutError:
            pass
        name = "(d) XMPP (Prosody), CSI inactive" if csi else "(c) XMPP (Prosody)"
        result = dict(m, name=name, initial_bytes=initial, run_bytes=proxy.down - initial)
        for c in contacts + [observer]:
            c.disconnect()
        await asyncio.sleep(0.5)
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--schedule", required=True)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if shutil.which("prosody") is None:
        sys.exit("prosody is not installed (Debian: apt-get install prosody)")
    with open(args.schedule) as f:
        schedule = json.load(f)
    results = [asyncio.run(run(schedule, args.scale, False)), asyncio.run(run(schedule, args.scale, True))]
    with open(args.out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
