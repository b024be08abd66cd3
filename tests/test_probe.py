"""The ARP fallback (scapy) between network namespaces made here (root)."""

from __future__ import annotations

import json
import sys
import uuid

import pytest

from provision.lab import netns
from tests.conftest import REPO

pytestmark = pytest.mark.root


def test_only_present_nodes_answer_arp():
    net = netns.Network(f"pvt-{uuid.uuid4().hex[:5]}")
    try:
        server = net.add_host("srv", address="10.79.0.1/24")
        net.add_host("n1", address="10.79.0.11/24")
        net.add_host("n2", address="10.79.0.12/24")
        probe = ("import json; from provision.probe import answering_arp; "
                 "print(json.dumps(sorted(answering_arp(['10.79.0.11', '10.79.0.12', '10.79.0.13'], timeout=1))))")
        result = net.run(server, [sys.executable, "-c", probe], cwd=REPO)
        assert json.loads(result.stdout) == ["10.79.0.11", "10.79.0.12"]
    finally:
        net.teardown()
