"""Is a node there? ARP probing with scapy, the fallback for nodes that did not report in."""

from __future__ import annotations

import logging
from collections.abc import Sequence


def answering_arp(addresses: Sequence[str], timeout: float = 2.0) -> set[str]:
    """The addresses among `addresses` that answer an ARP request (on the interface of their route).
    Only addresses the caller names are probed; nothing else is sent."""
    if not addresses:
        return set()
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.layers.l2 import arping  # scapy is slow to import: only when a probe is needed

    answered, _ = arping(list(addresses), timeout=timeout, verbose=False)
    return {received.psrc for _, received in answered}
