"""dhcpd as a service: install (check, then atomic swap) and a managed dhcpd serving a real client.

The rig: a server namespace with an address of the subnet (dhcpd needs one) and a node namespace with
no address, on a bridge; busybox udhcpc in the node namespace asks for a lease like a PXE ROM would.
"""

from __future__ import annotations

import uuid

import pytest

from provision.lab import netns
from provision.lab.dhcp_client import obtain_lease
from provision.errors import InputError
from provision.services.dhcpd import DhcpdProcess, install
from tests.conftest import require_tool

pytestmark = pytest.mark.root

MAC = "02:55:00:00:00:07"


def config(node_ip: str) -> str:
    return f"""
authoritative;
ddns-update-style none;
default-lease-time 600;
max-lease-time 600;
deny unknown-clients;
subnet 10.251.0.0 netmask 255.255.255.0 {{
  option routers 10.251.0.1;
  next-server 10.251.0.1;
}}
host n07 {{
  hardware ethernet {MAC};
  fixed-address {node_ip};
  option host-name "n07";
  filename "pxelinux.0";
}}
"""


def test_install_checks_before_it_replaces(tmp_path):
    require_tool("dhcpd")
    good, bad, live = tmp_path / "good.conf", tmp_path / "bad.conf", tmp_path / "live" / "dhcpd.conf"
    good.write_text(config("10.251.0.50"))
    bad.write_text(config("10.251.0.50").replace("fixed-address", "fixed-adress"))
    assert install(good, live) is True
    assert install(good, live) is False  # unchanged: nothing to do
    with pytest.raises(InputError, match="rejected by dhcpd -t"):
        install(bad, live)
    assert live.read_text() == good.read_text()
    assert [p.name for p in live.parent.iterdir()] == ["dhcpd.conf"]  # no temp file left


@pytest.fixture
def rig(tmp_path):
    require_tool("dhcpd")
    require_tool("busybox")
    net = netns.Network(f"pvt-{uuid.uuid4().hex[:6]}")
    dhcpd = None
    try:
        server = net.add_host("srv", address="10.251.0.1/24")
        node = net.add_host("n07", mac=MAC)
        live = tmp_path / "etc" / "dhcpd.conf"
        rendered = tmp_path / "rendered.conf"
        rendered.write_text(config("10.251.0.50"))
        install(rendered, live)
        dhcpd = DhcpdProcess(live, tmp_path / "run", interfaces=["eth0"], netns=server.ns)
        yield net, node, dhcpd, rendered, tmp_path
    finally:
        if dhcpd is not None:
            dhcpd.stop()
        net.teardown()


def test_managed_dhcpd_serves_the_fixed_address_and_reloads(rig):
    net, node, dhcpd, rendered, tmp_path = rig
    pid = dhcpd.start()
    assert dhcpd.pid() == pid
    lease = obtain_lease(node.ns, "eth0", tmp_path / "client")
    assert str(lease.ip) == "10.251.0.50/24"
    assert (lease.next_server, lease.boot_file, lease.hostname) == ("10.251.0.1", "pxelinux.0", "n07")
    assert f"DHCPACK on 10.251.0.50 to {MAC}" in dhcpd.log_file.read_text()  # from our dhcpd

    # a config that fails dhcpd -t never goes live and the running dhcpd keeps serving
    live_before = dhcpd.config.read_text()
    rendered.write_text(config("10.251.0.60").replace("fixed-address", "fixed-adress"))
    with pytest.raises(InputError):
        dhcpd.install_and_reload(rendered)
    assert dhcpd.config.read_text() == live_before and dhcpd.pid() == pid

    # a good change goes live and dhcpd is restarted with it
    rendered.write_text(config("10.251.0.60"))
    assert dhcpd.install_and_reload(rendered) is True
    assert dhcpd.pid() not in (None, pid)
    lease = obtain_lease(node.ns, "eth0", tmp_path / "client")
    assert str(lease.ip) == "10.251.0.60/24"
    assert net.run(node, ["ping", "-c", "1", "-W", "2", "10.251.0.1"], check=False).returncode == 0

    assert dhcpd.stop() is True and not dhcpd.running()


def test_dhcpd_without_an_address_of_the_subnet_reports_why(rig):
    net, node, _, rendered, tmp_path = rig
    lonely = DhcpdProcess(rendered, tmp_path / "run2", interfaces=["eth0"], netns=node.ns)
    with pytest.raises(Exception, match="(?s)dhcpd exited.*No subnet declaration for eth0"):
        lonely.start()
    assert not lonely.running()
