"""Hear DHCP requests on an interface with a raw AF_PACKET socket (root; it sees the frames beside a running
dhcpd, which answers only the MACs it knows), and find the interface that holds an address."""

from __future__ import annotations

import ctypes
import ipaddress
import json
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterator

from provision.discovery.dhcp_packet import ETH_P_IP, DhcpRequest, parse_frame
from provision.errors import ProvisionError

MAX_FRAME = 65535


def interface_holding(address: ipaddress.IPv4Address) -> str:
    """The name of this host's (this network namespace's) interface that has `address`."""
    proc = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProvisionError(f"ip addr show failed: {proc.stderr.strip()}")
    for link in json.loads(proc.stdout or "[]"):
        if any(a.get("local") == str(address) for a in link.get("addr_info", ())):
            return link["ifname"]
    raise ProvisionError(f"no interface here has the server address {address}: run discover where the install "
                         f"server runs, or name the interface with --interface")


# The kernel's filter (classic BPF, `tcpdump -dd 'udp dst port 67'`): only IPv4 UDP to port 67 that is not a
# later fragment reaches the socket, so a busy install network costs this process nothing.
UDP_DST_67 = [(0x28, 0, 0, 12), (0x15, 0, 8, ETH_P_IP), (0x30, 0, 0, 23), (0x15, 0, 6, 17), (0x28, 0, 0, 20),
              (0x45, 4, 0, 0x1FFF), (0xB1, 0, 0, 14), (0x48, 0, 0, 16), (0x15, 0, 1, 67), (0x06, 0, 0, MAX_FRAME),
              (0x06, 0, 0, 0)]
SO_ATTACH_FILTER = 26


def open_listener(interface: str) -> socket.socket:
    """A raw socket receiving the frames to UDP port 67 on `interface` (filtered before it is bound: no
    other frame is ever queued)."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError:
        raise ProvisionError("listening for DHCP requests needs root (a raw AF_PACKET socket)") from None
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in UDP_DST_67))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,  # struct sock_fprog: length, pointer to the program
                    struct.pack("HP", len(UDP_DST_67), ctypes.addressof(program)))
    try:
        sock.bind((interface, ETH_P_IP))  # CPython puts the protocol in network order
    except OSError as exc:
        sock.close()
        raise ProvisionError(f"--interface {interface}: cannot listen there: {exc.strerror}") from None
    return sock


def requests(sock: socket.socket, deadline: float) -> Iterator[DhcpRequest]:
    """The DHCP requests heard on `sock` (frames to UDP port 67) until time.monotonic() passes `deadline`."""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            continue
        try:
            frame, address = sock.recvfrom(MAX_FRAME)
        except OSError as exc:  # e.g. the interface went down
            raise ProvisionError(f"listening for DHCP requests: {exc.strerror or exc}") from None
        if address[2] == socket.PACKET_OUTGOING:
            continue  # our own host's frames
        request = parse_frame(frame)
        if request is not None:
            yield request
