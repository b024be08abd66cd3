"""Every rendered dhcpd.conf passes the real ISC `dhcpd -t`; a config it rejects never replaces the old one."""

from __future__ import annotations

import pytest

from provision.errors import InputError
from provision.inventory import load_inventory
from provision.render import render_files, render_to
from provision.services.dhcpd import check_config, check_config_text
from tests.conftest import require_tool
from tests.fixtures.inventories import EXAMPLE, LAB, inventory_yaml, snapshot, write


@pytest.fixture(autouse=True)
def _dhcpd():
    require_tool("dhcpd")


def _check(tmp_path, text: str) -> None:
    path = tmp_path / "dhcpd.conf"
    path.write_text(text)
    check_config(path)


@pytest.mark.parametrize("inventory", [EXAMPLE, LAB], ids=["example", "lab"])
def test_shipped_inventories_pass_dhcpd(tmp_path, inventory):
    inv = load_inventory(inventory)
    _check(tmp_path, render_files(inv)["dhcpd.conf"])
    every_node_local = dict.fromkeys(inv.node_names, "local")
    _check(tmp_path, render_files(inv, boot_modes=every_node_local)["dhcpd.conf"])


@pytest.mark.parametrize("nodes", [1, 250])
def test_generated_inventories_pass_dhcpd(tmp_path, nodes):
    text = render_files(load_inventory(write(tmp_path, inventory_yaml(nodes))))["dhcpd.conf"]
    assert text.count("\nhost ") == nodes
    _check(tmp_path, text)


def test_site_override_passes_dhcpd(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "dhcpd.conf.j2").write_text(
        '{% extends "shipped/dhcpd.conf.j2" %}\n'
        "{% block globals %}{{ super() }}\n# site: longer leases\nmin-lease-time 7200;\n{% endblock %}\n"
    )
    text = render_files(load_inventory(EXAMPLE), site_templates=site)["dhcpd.conf"]
    assert "min-lease-time 7200;" in text and "option ipxe.no-pxedhcp 1;" in text
    _check(tmp_path, text)


def test_rejected_config_raises_with_dhcpds_message():
    with pytest.raises(InputError) as caught:
        check_config_text("subnet 10.0.0.0 netmask 255.255.255.0 {\n  bogus words here;\n}\n", label="/x/dhcpd.conf")
    message = str(caught.value)
    assert message.startswith("/x/dhcpd.conf: rejected by dhcpd -t:")
    assert "/x/dhcpd.conf line 2" in message  # dhcpd's own message, pointing at the rendered file
    assert "Internet Systems Consortium" not in message


def test_render_to_checks_before_it_replaces(tmp_path):
    out = tmp_path / "out"
    render_to(out, load_inventory(EXAMPLE))
    before = snapshot(out)
    site = tmp_path / "site"
    site.mkdir()
    (site / "dhcpd.conf.j2").write_text('{% extends "shipped/dhcpd.conf.j2" %}{% block globals %}max-lease-time forever;{% endblock %}')
    with pytest.raises(InputError, match="rejected by dhcpd -t"):
        render_to(out, load_inventory(EXAMPLE), site_templates=site)
    assert snapshot(out) == before


def test_render_to_reports_the_check(tmp_path):
    report = render_to(tmp_path / "out", load_inventory(write(tmp_path, inventory_yaml(2))))
    assert report.dhcp_checked
