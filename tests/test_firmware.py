"""Both firmware kinds: the per-node `firmware` field, GRUB configs for UEFI nodes beside the pxelinux ones,
flips that switch both, a real dhcpd that hands out the loader by the client's architecture (option 93),
and GRUB's network image (grub-mknetdir) installed into the TFTP root for UEFI nodes.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from provision.lab import netns
from provision.bootmode import BootMode
from provision.lab.dhcp_client import busybox, install_script, parse_lease_file
from provision.inventory import load_inventory
from provision.errors import ProvisionError
from provision.model import GRUB_EFI_LOADER, Boot, Firmware
from provision.render import HTTP_PXE_LOADER, PXE_LOADER, render_files, render_to
from provision.services.dhcpd import DhcpdProcess, check_config_text, install
from provision.services.tftp import GRUB_EFI_DIR, install_boot_files
from tests.conftest import require_root, require_tool, skip_or_fail
from tests.fixtures.inventories import REPO, inventory_yaml, write

MIXED = REPO / "tests" / "fixtures" / "mixed-firmware.yaml"
MIXED_TFTP = REPO / "tests" / "fixtures" / "mixed-firmware-tftp.yaml"  # the same with boot.transport: tftp
UEFI_GRUB = "tftpboot/grub/grub.cfg-01-02-00-00-00-00-02"
UEFI_PXELINUX = "tftpboot/pxelinux.cfg/01-02-00-00-00-00-02"


def test_firmware_defaults_to_bios_and_is_set_in_defaults_or_per_node(tmp_path):
    plain = load_inventory(write(tmp_path, inventory_yaml(2)))
    assert {n.firmware for n in plain.nodes} == {Firmware.BIOS}
    text = inventory_yaml(3, defaults="firmware: uefi").replace("ip: 10.9.0.3}", "ip: 10.9.0.3, firmware: bios}")
    inv = load_inventory(write(tmp_path, text))
    assert [n.firmware for n in inv.nodes] == [Firmware.UEFI, Firmware.BIOS, Firmware.UEFI]


def test_only_uefi_nodes_get_a_grub_config():
    files = render_files(load_inventory(MIXED))
    grub = sorted(rel for rel in files if rel.startswith("tftpboot/grub/"))
    assert grub == [UEFI_GRUB]
    assert UEFI_PXELINUX in files  # the pxelinux config stays: the layout of issue 3 holds for every node
    install_cfg = files[UEFI_GRUB]
    (linux,) = [line.split() for line in install_cfg.splitlines() if line.strip().startswith("linux ")]
    assert linux[:3] == ["linux", "(http,10.9.0.1:8080)/boot/vmlinuz", "inst.ks=http://10.9.0.1:8080/kickstart/uefi1.ks"]
    assert linux[-2:] == ["console=ttyS0,115200", "BOOTIF=01-02-00-00-00-00-02"]  # after the node's own arguments
    assert "initrd (http,10.9.0.1:8080)/boot/initrd.img\n" in install_cfg
    assert "insmod http\n" in install_cfg  # GRUB's net image loads the module from its TFTP prefix


def test_tftp_transport_keeps_kernel_and_initrd_on_tftp():
    files = render_files(load_inventory(MIXED_TFTP))
    install_cfg = files[UEFI_GRUB]
    assert "  linux /boot/vmlinuz " in install_cfg and "initrd /boot/initrd.img\n" in install_cfg
    assert "http" not in install_cfg.replace("inst.ks=http", "").replace("boot_url=http", "")
    assert "  KERNEL boot/vmlinuz\n  INITRD boot/initrd.img\n" in files["tftpboot/pxelinux.cfg/01-02-00-00-00-00-01"]
    assert files["dhcpd.conf"].count(f'filename "{PXE_LOADER}";') == 2
    assert HTTP_PXE_LOADER not in files["dhcpd.conf"]


def test_flip_switches_both_loader_configs():
    inv = load_inventory(MIXED)
    install_files = render_files(inv)
    local_files = render_files(inv, boot_modes={"uefi1": BootMode.LOCAL})
    changed = {rel for rel in install_files if install_files[rel] != local_files[rel]}
    assert changed == {"dhcpd.conf", UEFI_PXELINUX, UEFI_GRUB}
    assert "chainloader ($esp)/EFI/BOOT/BOOTX64.EFI" in local_files[UEFI_GRUB]
    assert "linux " not in local_files[UEFI_GRUB]
    assert "LOCALBOOT 0" in local_files[UEFI_PXELINUX]
    assert render_files(inv, boot_modes={"uefi1": "install"}) == install_files  # and back


def test_node_switched_to_bios_loses_its_grub_config(tmp_path):
    out = tmp_path / "out"
    render_to(out, load_inventory(MIXED), check_dhcpd=False)
    assert (out / UEFI_GRUB).is_file()
    bios_only = write(tmp_path, MIXED.read_text().replace(", firmware: uefi}", "}"))
    report = render_to(out, load_inventory(bios_only), check_dhcpd=False)
    assert report.files.removed == (UEFI_GRUB,)


def test_mixed_dhcpd_conf_passes_dhcpd(tmp_path):
    require_tool("dhcpd")
    for inv, loader in ((load_inventory(MIXED), HTTP_PXE_LOADER), (load_inventory(MIXED_TFTP), PXE_LOADER)):
        for modes in ({}, dict.fromkeys(inv.node_names, "local")):
            text = render_files(inv, boot_modes=modes)["dhcpd.conf"]
            assert text.count(f'filename "{GRUB_EFI_LOADER}";') == 2
            assert text.count(f'filename "{loader}";') == 2
            # iPXE firmware gets pxelinux.0 over HTTP too (it hands http:// URLs to iPXE's own client)
            assert text.count('option user-class = "iPXE"') == (2 if loader == HTTP_PXE_LOADER else 0)
            assert text.count(f'filename "{PXE_LOADER}";') == 2  # the iPXE branch over HTTP, the only one over TFTP
            check_config_text(text, label=f"mixed dhcpd.conf ({inv.boot.transport})")


def _udhcpc_boot_file(ns: str, work, arch: str, user_class: str | None = None) -> str:
    """The boot file our dhcpd offers a client that sends DHCP option 93 = `arch` (hex, e.g. 0007) and
    option 77 (user class) = `user_class`, as iPXE sends "iPXE"."""
    script = install_script(work)
    lease_file = work / "lease.env"
    lease_file.unlink(missing_ok=True)
    argv = [busybox(), "udhcpc", "-f", "-q", "-n", "-i", "eth0", "-s", str(script), "-t", "5", "-T", "1",
            "-x", f"0x5d:{arch}"] + (["-x", f"0x4d:{user_class.encode().hex()}"] if user_class else [])
    subprocess.run(netns.ns_argv(ns, argv), capture_output=True, timeout=30,
                   env={**os.environ, "PROVISION_LEASE_FILE": str(lease_file)})
    return parse_lease_file(lease_file.read_text())["boot_file"]


@pytest.mark.root
def test_dhcpd_picks_the_loader_by_client_architecture(tmp_path):
    require_root()
    require_tool("dhcpd")
    require_tool("busybox")
    inv = load_inventory(MIXED)
    render_to(tmp_path / "rendered", inv)
    net = netns.Network(f"pvq-{uuid.uuid4().hex[:6]}")
    dhcpd = None
    try:
        server = net.add_host("srv", address="10.9.0.1/24")
        node = net.add_host("uefi1", mac="02:00:00:00:00:02")
        live = tmp_path / "live" / "dhcpd.conf"
        install(tmp_path / "rendered" / "dhcpd.conf", live)
        dhcpd = DhcpdProcess(live, tmp_path / "run", interfaces=["eth0"], netns=server.ns)
        dhcpd.start()
        assert _udhcpc_boot_file(node.ns, tmp_path / "efi", "0007") == GRUB_EFI_LOADER
        assert _udhcpc_boot_file(node.ns, tmp_path / "efi9", "0009") == GRUB_EFI_LOADER
        assert _udhcpc_boot_file(node.ns, tmp_path / "bios", "0000") == HTTP_PXE_LOADER  # boot.transport: http
        assert _udhcpc_boot_file(node.ns, tmp_path / "ipxe", "0000", "iPXE") == PXE_LOADER  # iPXE's own HTTP
        assert _udhcpc_boot_file(node.ns, tmp_path / "ipxe-efi", "0007", "iPXE") == GRUB_EFI_LOADER
    finally:
        if dhcpd is not None:
            dhcpd.stop()
        net.teardown()


def _boot(tmp_path) -> Boot:
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"K" * 100)
    initrd.write_bytes(b"I" * 100)
    return Boot(kernel=str(kernel), initrd=str(initrd))


def test_uefi_boot_files_are_grubs_net_image(tmp_path):
    if not (GRUB_EFI_DIR / "modinfo.sh").is_file() or not Path("/usr/lib/PXELINUX/pxelinux.0").is_file():
        skip_or_fail("needs Debian's grub-efi-amd64-bin, pxelinux and syslinux-common packages")
    root = tmp_path / "tftpboot"
    (root / "grub").mkdir(parents=True)
    (root / "grub" / "grub.cfg-01-02-00-00-00-00-02").write_text("rendered\n")
    installed = {str(p.relative_to(root)) for p in install_boot_files(root, _boot(tmp_path), uefi=True)}
    assert {"pxelinux.0", "boot/vmlinuz", GRUB_EFI_LOADER} <= installed
    platform = root / "grub" / "x86_64-efi"
    modules = {"normal.mod", "linux.mod", "efinet.mod", "tftp.mod", "http.mod", "chain.mod"}
    assert modules <= {p.name for p in platform.iterdir()}  # http.mod: `insmod http` of boot.transport: http
    assert (root / GRUB_EFI_LOADER).read_bytes()[:2] == b"MZ"  # a PE image the firmware can start
    assert (root / "grub" / "grub.cfg-01-02-00-00-00-00-02").read_text() == "rendered\n"  # renders stay
    assert not list(root.rglob(".*.tmp"))


def test_bios_only_installs_no_grub(tmp_path):
    if not Path("/usr/lib/PXELINUX/pxelinux.0").is_file():
        skip_or_fail("needs Debian's pxelinux and syslinux-common packages")
    root = tmp_path / "tftpboot"
    install_boot_files(root, _boot(tmp_path), grub_efi_dir=tmp_path / "nogrub")
    assert not (root / "grub").exists()


def test_missing_grub_is_named_and_nothing_is_copied(tmp_path):
    with pytest.raises(ProvisionError, match=r"missing .*/nogrub \(Debian package grub-efi-amd64-bin\)"):
        install_boot_files(tmp_path / "root", _boot(tmp_path), uefi=True, grub_efi_dir=tmp_path / "nogrub")
    assert not (tmp_path / "root").exists()


def test_both_pxelinux_loaders_are_debians(tmp_path):
    """pxelinux.0 for boot.transport: tftp, lpxelinux.0 (its own TCP/IP stack: http:// URLs) for http."""
    if not Path("/usr/lib/PXELINUX/lpxelinux.0").is_file():
        skip_or_fail("needs Debian's pxelinux package")
    root = tmp_path / "tftpboot"
    install_boot_files(root, _boot(tmp_path))
    for loader in (PXE_LOADER, HTTP_PXE_LOADER):
        assert (root / loader).read_bytes() == (Path("/usr/lib/PXELINUX") / loader).read_bytes()
