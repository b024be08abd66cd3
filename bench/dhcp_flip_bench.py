"""DHCP flip bench (root): how long a flip takes to apply with ISC dhcpd (a restart) and with Kea (config-reload),
and how long the server is silent meanwhile, for 1 and 1,000 nodes.

Each server runs inside a namespace of the bench's own with the server's address (10.100.0.1/16), serving a
generated inventory (render_bench's, in a private temporary directory). A flip: render with node00001's boot
mode switched (render_to, which checks the config with dhcpd -t or kea-dhcp4 -t), then install_and_reload (the
check of the live config, then the restart or the config-reload). Best of `--repeat`; also the reload alone
(DhcpdProcess.reload: dhcpd -t and a restart; KeaProcess.reload: config-reload). Then the same flips
again while a client in a second namespace sends a DHCPDISCOVER for node00001 every `--interval` seconds: the
longest run of unanswered DISCOVERs is the time the server did not answer.

Usage: sudo .venv/bin/python bench/dhcp_flip_bench.py [--nodes 1,1000] [--repeat 3] [--interval 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.render_bench import inventory_text  # noqa: E402
from provision.inventory import load_inventory  # noqa: E402
from provision.lab import netns  # noqa: E402
from provision.render import DHCPD_CONF, KEA_CONF, render_to  # noqa: E402
from provision.services.dhcpd import DhcpdProcess  # noqa: E402
from provision.services.kea import KeaProcess  # noqa: E402

SERVER_ADDRESS = "10.100.0.1/16"  # render_bench's server, in its /16
PROBE_MAC = "02:00:00:00:00:01"   # node00001
PROBE_IP = "10.100.0.11"


# --- the probing client (runs inside the client namespace: this script with --probe) ---------------------

def discover(mac: bytes, xid: int) -> bytes:
    """An Ethernet frame holding a broadcast DHCPDISCOVER from `mac` (UDP checksum 0: none)."""
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000, b"", b"", b"", b"", mac, b"", b"")
    dhcp = (bootp + b"\x63\x82\x53\x63" + bytes([53, 1, 1, 255])).ljust(300, b"\0")
    udp = struct.pack("!HHHH", 68, 67, 8 + len(dhcp), 0) + dhcp
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, b"\0" * 4, b"\xff" * 4)
    words = sum(struct.unpack("!10H", header))
    words = (words & 0xFFFF) + (words >> 16)
    header = header[:10] + struct.pack("!H", ~((words & 0xFFFF) + (words >> 16)) & 0xFFFF) + header[12:]
    return b"\xff" * 6 + mac + b"\x08\x00" + header + udp


def offer_xid(frame: bytes) -> int | None:
    """The xid of a DHCPOFFER (a BOOTP reply to port 68 whose option 53 is 2), else None."""
    if len(frame) < 14 + 20 + 8 + 240 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ip_len = (frame[14] & 15) * 4
    udp = 14 + ip_len
    bootp = udp + 8
    if struct.unpack("!H", frame[udp + 2:udp + 4])[0] != 68 or frame[bootp] != 2:
        return None
    options = frame[bootp + 240:]
    while len(options) >= 2 and options[0] != 255:
        if options[0] == 0:
            options = options[1:]
            continue
        if options[0] == 53 and options[2] == 2:
            return struct.unpack("!I", frame[bootp + 4:bootp + 8])[0]
        options = options[2 + options[1]:]
    return None


def probe(mac_text: str, seconds: float, interval: float) -> list[tuple[float, bool]]:
    """Send a DISCOVER every `interval` s for `seconds` s; (monotonic send time, answered?) for each."""
    mac = bytes.fromhex(mac_text.replace(":", ""))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    sock.bind(("eth0", 0))
    sock.setblocking(False)
    print("ready", flush=True)
    sent: dict[int, float] = {}
    answered: set[int] = set()
    start = time.monotonic()
    next_send, xid = start, 0x5EED0000
    while time.monotonic() < start + seconds + 1.0:  # one more second for the last answers
        now = time.monotonic()
        if now >= next_send and now < start + seconds:
            xid += 1
            sock.send(discover(mac, xid))
            sent[xid] = now
            next_send += interval
        try:
            while True:
                got = offer_xid(sock.recv(2048))
                if got in sent:
                    answered.add(got)
        except BlockingIOError:
            time.sleep(0.001)
    return [(sent[x], x in answered) for x in sorted(sent)]


def longest_silence(results: list[tuple[float, bool]]) -> tuple[float, int]:
    """(seconds from the first unanswered DISCOVER of the longest run to the next answered one, unanswered)."""
    longest, unanswered, first = 0.0, 0, None
    for sent, ok in results:
        if not ok:
            unanswered += 1
            first = sent if first is None else first
        elif first is not None:
            longest, first = max(longest, sent - first), None
    if first is not None:
        longest = max(longest, results[-1][0] - first)
    return longest, unanswered


# --- the bench ------------------------------------------------------------------------------------------

def flip_once(server, inv, rendered_dir: Path, conf: str, mode: str) -> tuple[float, float]:
    """(render + check, install_and_reload) seconds for one flip of node00001 to `mode`."""
    start = time.perf_counter()
    render_to(rendered_dir, inv, boot_modes={"node00001": mode})
    rendered = time.perf_counter()
    if not server.install_and_reload(rendered_dir / conf):
        raise RuntimeError("the flip changed nothing")
    return rendered - start, time.perf_counter() - rendered


def bench_one(kind: str, nodes: int, tmp: Path, net: netns.Network, server_ns: str, client_ns: str,
              repeat: int, interval: float) -> dict:
    work = tmp / f"{kind}-{nodes}"
    text = inventory_text(nodes) + ("\ndhcp:\n  server: kea\n" if kind == "kea" else "")
    (work / "inv").mkdir(parents=True)
    inv = load_inventory(_write(work / "inv" / "bench.yaml", text))
    conf = KEA_CONF if kind == "kea" else DHCPD_CONF
    cls = KeaProcess if kind == "kea" else DhcpdProcess
    server = cls(work / "run" / conf, work / "run", interfaces=["eth0"], netns=server_ns)
    try:
        render_to(work / "rendered", inv)
        server.install_and_reload(work / "rendered" / conf)  # started
        pid = server.pid()
        modes = ["local", "install"] * repeat
        timings = [flip_once(server, inv, work / "rendered", conf, mode) for mode in modes[:repeat]]
        reloads = []
        for _ in range(repeat):
            start = time.perf_counter()
            server.reload()
            reloads.append(time.perf_counter() - start)
        silences = []
        for mode in modes[repeat:]:
            window = 3.0 + 4 * min(t[1] for t in timings)
            client = subprocess.Popen(netns.ns_argv(client_ns, [sys.executable, __file__, "--probe", PROBE_MAC,
                                                                str(window), str(interval)]),
                                      stdout=subprocess.PIPE, text=True)
            assert client.stdout is not None and client.stdout.readline() == "ready\n"
            time.sleep(1.0)  # answered DISCOVERs before the flip
            flip_once(server, inv, work / "rendered", conf, mode)
            out, _ = client.communicate(timeout=window + 30)
            silences.append(longest_silence(json.loads(out)))
        return {"server": kind, "nodes": nodes, "render": min(t[0] for t in timings),
                "apply": min(t[1] for t in timings), "apply_max": max(t[1] for t in timings), "reload": min(reloads),
                "silence": [s[0] for s in silences], "unanswered": [s[1] for s in silences],
                "same_pid": server.pid() == pid}
    finally:
        server.stop()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1,1000", help="node counts, comma separated (default 1,1000)")
    parser.add_argument("--repeat", type=int, default=3, help="flips per case; the best one is reported")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between the probe's DISCOVERs")
    parser.add_argument("--probe", nargs=3, metavar=("MAC", "SECONDS", "INTERVAL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe[0], float(args.probe[1]), float(args.probe[2]))))
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    rows = []
    net = netns.Network(f"pvb-{uuid.uuid4().hex[:6]}")
    try:
        server = net.add_host("srv", address=SERVER_ADDRESS, mac="02:00:00:ff:ff:fe")
        client = net.add_host("cli", mac=PROBE_MAC)
        with tempfile.TemporaryDirectory(prefix="provision-dhcp-bench-") as tmp:
            for nodes in (int(n) for n in args.nodes.split(",")):
                for kind in ("isc", "kea"):
                    rows.append(bench_one(kind, nodes, Path(tmp), net, server.ns, client.ns, args.repeat,
                                          args.interval))
                    print(f"  {kind} {nodes}: {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        net.teardown()
    print(f"\nflip of one node, best of {args.repeat}; DISCOVER every {args.interval * 1000:.0f} ms during "
          f"{args.repeat} more flips; load average {os.getloadavg()[0]:.1f}\n")
    print("| server | nodes | render + check (s) | apply (s) | flip (s) | reload alone (s) | server silent (s) |"
          " DISCOVERs unanswered | same pid |")
    print("|--------|------:|-------------------:|----------:|---------:|-----------------:|------------------:|"
          "---------------------:|----------|")
    for r in rows:
        how = "dhcpd restart" if r["server"] == "isc" else "Kea config-reload"
        print(f"| {how} | {r['nodes']:,} | {r['render']:.3f} | {r['apply']:.3f} | {r['render'] + r['apply']:.3f} | "
              f"{r['reload']:.3f} | {min(r['silence']):.2f}-{max(r['silence']):.2f} | "
              f"{min(r['unanswered'])}-{max(r['unanswered'])} | {'yes' if r['same_pid'] else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
