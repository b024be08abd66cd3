"""Issue 6's boot-time savings: the IPv6 router advertisement `provision install` sends when the inventory
asks (`network.ipv6_ra`), received in a second namespace; the demo's installer-fetch count per transport."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from provision.lab import netns
from provision.errors import ProvisionError
from provision.inventory import parse_inventory
from provision.lab.clone_checks import installer_fetches
from provision.services.ra import interface_with
from tests.conftest import REPO, require_root
from tests.fixtures.inventories import LAB

# In the server's namespace: what `provision install` does for `network.ipv6_ra: true` (every 0.2 s here).
ADVERTISE = """import sys, time
from provision.services.ra import RouterAdvertiser, interface_with
advertiser = RouterAdvertiser(interface_with(sys.argv[1]), interval=0.2).start()
print("advertising on", advertiser.iface, flush=True)
time.sleep(30)
"""

# In a node's namespace: the first two router advertisements heard on eth0, as scapy decodes them.
SNIFF = """import logging
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.layers.inet6 import IPv6, ICMPv6ND_RA
from scapy.sendrecv import sniff
for p in sniff(iface="eth0", lfilter=lambda p: p.haslayer(ICMPv6ND_RA), count=2, timeout=20):
    ra = p[ICMPv6ND_RA]
    print(p.src, p[IPv6].src, p[IPv6].dst, p[IPv6].hlim, ra.M, ra.O, ra.routerlifetime, flush=True)
"""


@pytest.mark.root
def test_install_router_advertisement_reaches_the_nodes():
    require_root()
    net = netns.Network(f"pvra-{uuid.uuid4().hex[:5]}")
    procs: list[subprocess.Popen] = []
    try:
        server = net.add_host("srv", address="10.79.0.1/24", mac="02:79:00:00:00:01")
        node = net.add_host("n1", mac="02:79:00:00:00:11")
        sniffer = net.popen(node, [sys.executable, "-c", SNIFF], stdout=subprocess.PIPE, text=True, cwd=REPO)
        procs.append(sniffer)
        advertiser = net.popen(server, [sys.executable, "-c", ADVERTISE, "10.79.0.1"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=REPO)
        procs.append(advertiser)
        assert advertiser.stdout.readline().strip() == "advertising on eth0"
        heard, _ = sniffer.communicate(timeout=30)
        lines = heard.splitlines()
        assert len(lines) == 2, heard
        # from the server's MAC and its link-local address, to all nodes, offering nothing (M=0, O=0, lifetime 0)
        assert set(lines) == {"02:79:00:00:00:01 fe80::79:ff:fe00:1 ff02::1 255 0 0 0"}, heard
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        net.teardown()
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(net.prefix)]


def test_advertiser_needs_the_server_address_on_an_interface():
    with pytest.raises(ProvisionError, match="no interface holds the server address 192.0.2.77"):
        interface_with("192.0.2.77")


INSTALL_LOG = """\
12:00:01 provision.tftp: tftp: sent lpxelinux.0 to 10.77.0.11:2070: 75072 bytes in 0.100 s
12:00:02 provision.tftp: tftp: sent boot/initrd.img to 10.77.0.12:2071: 1000 bytes in 0.100 s
12:00:03 provision.http: http: sent boot/initrd.img to 10.77.0.11: 13107200 bytes in 1.20 s
12:00:03 provision.http: http: sent boot/initrd.img to 10.77.0.11: 107200 bytes in 0.10 s (bytes 13000000-)
12:00:04 provision.http: http: sent boot/vmlinuz to 10.77.0.12: 8000000 bytes in 0.80 s
"""


def test_installer_fetches_are_counted_in_the_log_of_the_transport(tmp_path):
    http = parse_inventory(LAB.read_text(), LAB)  # inventory/lab.yaml says transport: http
    tftp = parse_inventory(LAB.read_text().replace("  transport: http", "  transport: tftp"), LAB)
    assert [installer_fetches(http, ip, INSTALL_LOG) for ip in ("10.77.0.11", "10.77.0.12")] == [1, 0]
    assert [installer_fetches(tftp, ip, INSTALL_LOG) for ip in ("10.77.0.11", "10.77.0.12")] == [0, 1]
