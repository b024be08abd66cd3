"""IPv6 router advertisements that end iPXE's wait for IPv6 autoconfiguration (PXE-NOTES 2: ~13 s per boot).

The advertisement offers nothing: no prefix, no managed/other configuration (M=0, O=0) and router lifetime
0 (not a default router). It only tells a booting iPXE that no IPv6 configuration is coming.

    ip netns exec <server ns> python -m provision.ra eth0      # every second until stopped
"""

from __future__ import annotations

import argparse
import logging
import time


def advertisement(source_mac: str):
    """The RA frame from `source_mac` to all nodes (ff02::1), with the link-local address of that MAC."""
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.layers.inet6 import IPv6, ICMPv6ND_RA, ICMPv6NDOptSrcLLAddr  # scapy is slow to import
    from scapy.layers.l2 import Ether
    from scapy.utils6 import in6_mactoifaceid

    link_local = "fe80::" + in6_mactoifaceid(source_mac)
    return (Ether(src=source_mac, dst="33:33:00:00:00:01") / IPv6(src=link_local, dst="ff02::1", hlim=255)
            / ICMPv6ND_RA(M=0, O=0, routerlifetime=0) / ICMPv6NDOptSrcLLAddr(lladdr=source_mac))


def advertise(iface: str, interval: float = 1.0, count: int | None = None) -> None:
    """Send the RA on `iface` every `interval` seconds (`count` times, or until killed); one line on stdout
    after the first one is out (so a caller can wait for it before it powers machines on)."""
    from scapy.arch import get_if_hwaddr
    from scapy.sendrecv import sendp

    frame = advertisement(get_if_hwaddr(iface))
    sent = 0
    while count is None or sent < count:
        sendp(frame, iface=iface, verbose=False)
        if not sent:
            print(f"provision.ra: advertising on {iface}", flush=True)
        sent += 1
        time.sleep(interval)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m provision.ra", description=__doc__.splitlines()[0])
    parser.add_argument("iface")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--count", type=int)
    args = parser.parse_args(argv)
    advertise(args.iface, args.interval, args.count)


if __name__ == "__main__":
    main()
