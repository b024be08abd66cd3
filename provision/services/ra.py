"""IPv6 router advertisements that end iPXE's wait for IPv6 autoconfiguration (~13 s per boot; docs/boot.md).

The advertisement offers nothing: no prefix, no managed/other configuration (M=0, O=0) and router lifetime
0 (not a default router). It only tells a booting iPXE that no IPv6 configuration is coming. Hosts on the
link learn nothing from it either, but it is still a router advertisement on a shared network: sending it
is the admin's choice (inventory `network.ipv6_ra`, default off), and `provision install` sends it only
while it runs (RouterAdvertiser).

    ip netns exec <server ns> python -m provision.services.ra eth0      # every second until stopped
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import subprocess
import threading
import time

from provision.errors import ProvisionError

log = logging.getLogger("provision.services.ra")


def advertisement(source_mac: str):
    """The RA frame from `source_mac` to all nodes (ff02::1), with the link-local address of that MAC."""
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.layers.inet6 import IPv6, ICMPv6ND_RA, ICMPv6NDOptSrcLLAddr  # scapy is slow to import
    from scapy.layers.l2 import Ether
    from scapy.utils6 import in6_mactoifaceid

    link_local = "fe80::" + in6_mactoifaceid(source_mac)
    return (Ether(src=source_mac, dst="33:33:00:00:00:01") / IPv6(src=link_local, dst="ff02::1", hlim=255)
            / ICMPv6ND_RA(M=0, O=0, routerlifetime=0) / ICMPv6NDOptSrcLLAddr(lladdr=source_mac))


def interface_with(address: str) -> str:
    """The interface (of this network namespace) that holds the IPv4 `address`."""
    wanted = ipaddress.IPv4Address(address)
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    for line in out.splitlines():  # "2: eth0    inet 10.78.0.1/24 brd ..."
        fields = line.split()
        if "inet" in fields and ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).ip == wanted:
            return fields[1].split("@")[0]
    raise ProvisionError(f"no interface holds the server address {address}: cannot send router advertisements")


class RouterAdvertiser:
    """Sends the advertisement on `iface` every `interval` seconds from a thread, from start() (which
    returns once the first one is out) until stop()."""

    def __init__(self, iface: str, interval: float = 1.0):
        self.iface, self.interval = iface, interval
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socket = None
        self._frame = None

    def start(self) -> RouterAdvertiser:
        from scapy.arch import get_if_hwaddr
        from scapy.config import conf

        try:
            self._frame = advertisement(get_if_hwaddr(self.iface))
            self._socket = conf.L2socket(iface=self.iface)
        except (OSError, ValueError) as exc:
            raise ProvisionError(f"router advertisements on {self.iface}: {exc}") from None
        self._send()
        self._thread = threading.Thread(target=self._run, name="router-advertisement", daemon=True)
        self._thread.start()
        log.info("ra: advertising on %s every %g s (no prefix, not a router: ends iPXE's IPv6 wait)",
                 self.iface, self.interval)
        return self

    def _send(self) -> None:
        self._socket.send(self._frame)
        self.sent += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._send()
            except OSError as exc:  # the link went away: nothing left to advertise to
                log.warning("ra: sending on %s failed: %s", self.iface, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def advertise(iface: str, interval: float = 1.0, count: int | None = None) -> None:
    """Send the RA on `iface` every `interval` seconds (`count` times, or until killed); one line on stdout
    after the first one is out (so a caller can wait for it before it powers machines on)."""
    advertiser = RouterAdvertiser(iface, interval).start()
    print(f"provision.services.ra: advertising on {iface}", flush=True)
    try:
        while count is None or advertiser.sent < count:
            time.sleep(interval / 4)
    finally:
        advertiser.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m provision.services.ra", description=__doc__.splitlines()[0])
    parser.add_argument("iface")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--count", type=int)
    args = parser.parse_args(argv)
    advertise(args.iface, args.interval, args.count)


if __name__ == "__main__":
    main()
