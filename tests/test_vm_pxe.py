"""Real firmware against our servers: one QEMU machine (TCG) on a tap in a lab bridge PXE-boots from our
dhcpd and our tftpy server -- BIOS: SeaBIOS + the NIC's iPXE -> pxelinux.0 -> pxelinux.cfg/01-<mac>;
UEFI: OVMF + the NIC's iPXE EFI ROM -> GRUB's core.efi (DHCP option 93) -> grub/grub.cfg-01-<mac> --
then the installer kernel and initrd built from Debian packages, whose /init reports on the serial
console and powers off. Our router advertisement ends iPXE's IPv6 wait. One VM at a time."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from scapy.layers.inet6 import IPv6, ICMPv6ND_RA

from provision import netns
from provision.images.initrd import MARKER, installer_initrd
from provision.inventory import load_inventory
from provision.model import Firmware
from provision.qemu import OVMF_CODE, OVMF_VARS, Machine
from provision.ra import advertisement
from provision.render import render_to
from provision.services.dhcpd import DhcpdProcess
from provision.services.tftp import install_boot_files
from tests.conftest import require_root, require_tool, skip_or_fail

MAC = "52:54:00:66:00:11"


def test_machine_argv_bios_and_uefi(tmp_path):
    bios = Machine("n1", MAC, "tap0", tmp_path / "s.log", disk=tmp_path / "d.raw").argv()
    assert bios[:5] == ["qemu-system-x86_64", "-name", "n1", "-machine", "pc,accel=tcg,graphics=off"]
    assert f"virtio-net-pci,netdev=net0,mac={MAC},bootindex=0" in bios and "pflash" not in " ".join(bios)
    assert "tap,id=net0,ifname=tap0,script=no,downscript=no" in bios
    assert f"if=none,id=disk0,format=raw,file={tmp_path / 'd.raw'}" in bios
    uefi = Machine("n2", MAC, "tap1", tmp_path / "s.log", Firmware.UEFI, efi_vars=tmp_path / "vars.fd").argv()
    assert f"if=pflash,format=raw,unit=1,file={tmp_path / 'vars.fd'}" in uefi
    with pytest.raises(ValueError, match="own copy"):
        Machine("n3", MAC, "tap2", tmp_path / "s.log", Firmware.UEFI).argv()


def test_router_advertisement_offers_nothing():
    frame = advertisement("02:66:00:00:00:01")
    ra = frame.getlayer(ICMPv6ND_RA)
    assert (ra.M, ra.O, ra.routerlifetime) == (0, 0, 0)
    assert frame[IPv6].dst == "ff02::1" and frame[IPv6].src == "fe80::66:ff:fe00:1" and frame[IPv6].hlim == 255
    assert frame.dst == "33:33:00:00:00:01"


def inventory_text(kernel: Path, initrd: Path, firmware: Firmware) -> str:
    return f"""cluster: pvq
server: {{name: srv, ip: 10.66.0.1}}
network: {{subnet: 10.66.0.0/24}}
boot:
  kernel: {kernel}
  initrd: {initrd}
  append: console=ttyS0,115200 provision.poweroff
images:
  - {{source: /nonexistent/image.raw, target: /dev/vda1}}
nodes:
  - {{name: vm1, mac: "{MAC}", ip: 10.66.0.11, firmware: {firmware}}}
"""


TFTP_SERVE = """import logging, sys
from provision.services.tftp import TftpServer
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
TftpServer(sys.argv[1], host="10.66.0.1", port=69).serve_forever()
"""


# what the firmware must fetch from our TFTP server, in addition to the kernel and initrd
LOADER_FILES = {
    Firmware.BIOS: ("pxelinux.0", "ldlinux.c32", "pxelinux.cfg/01-52-54-00-66-00-11"),
    Firmware.UEFI: ("grub/x86_64-efi/core.efi", "grub/x86_64-efi/normal.mod", "grub/grub.cfg-01-52-54-00-66-00-11"),
}


@pytest.mark.vm
@pytest.mark.parametrize("firmware", list(Firmware), ids=[f.value for f in Firmware])
def test_vm_pxe_boots_our_installer(tmp_path, firmware):
    require_root()
    for tool in ("qemu-system-x86_64", "dhcpd", "apt-get", "dpkg-deb", "depmod", "readelf"):
        require_tool(tool)
    if not Path("/usr/lib/ipxe/qemu/efi-virtio.rom").is_file():
        skip_or_fail("needs the NIC's iPXE ROM (Debian package ipxe-qemu)")
    if firmware is Firmware.UEFI and not OVMF_CODE.is_file():
        skip_or_fail(f"needs {OVMF_CODE} (Debian package ovmf)")
    initrd = installer_initrd()
    inv_path = tmp_path / "pvq.yaml"
    inv_path.write_text(inventory_text(initrd.kernel.vmlinuz, initrd.path, firmware))
    inv = load_inventory(inv_path)
    rendered = tmp_path / "rendered"
    render_to(rendered, inv)
    install_boot_files(rendered / "tftpboot", inv.boot, uefi=firmware is Firmware.UEFI)
    efi_vars = None
    if firmware is Firmware.UEFI:
        efi_vars = tmp_path / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, efi_vars)

    net = netns.Network(f"pvq-{uuid.uuid4().hex[:5]}")
    dhcpd = tftp = qemu = ra = None
    serial, tftp_log = tmp_path / "serial.log", tmp_path / "tftp.log"
    try:
        server = net.add_host("srv", address="10.66.0.1/24")
        tap = "tap-vm1"
        subprocess.run(["ip", "-n", net.switch_ns, "tuntap", "add", tap, "mode", "tap"], check=True)
        subprocess.run(["ip", "-n", net.switch_ns, "link", "set", tap, "master", "br0", "up"], check=True)
        dhcpd = DhcpdProcess(rendered / "dhcpd.conf", tmp_path / "dhcpd", interfaces=["eth0"], netns=server.ns)
        dhcpd.start()
        ra = net.popen(server, [sys.executable, "-m", "provision.ra", "eth0"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, cwd=str(Path(__file__).resolve().parents[1]))
        assert ra.stdout.readline().startswith("provision.ra: advertising"), "no router advertisement"
        with open(tftp_log, "wb") as log:
            tftp = net.popen(server, [sys.executable, "-c", TFTP_SERVE, str(rendered / "tftpboot")],
                             stdout=log, stderr=subprocess.STDOUT, cwd=str(Path(__file__).resolve().parents[1]))
        machine = Machine("vm1", MAC, tap, serial, firmware, efi_vars=efi_vars)
        started = time.monotonic()
        qemu = subprocess.Popen(netns.ns_argv(net.switch_ns, machine.argv()), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            qemu.wait(timeout=300)  # /init powers the machine off (provision.poweroff)
        except subprocess.TimeoutExpired:
            pytest.fail("the VM did not power off within 300 s; serial log:\n" + serial.read_text(errors="replace")[-3000:])
        seconds = time.monotonic() - started
    finally:
        if qemu is not None and qemu.poll() is None:
            qemu.kill()
            qemu.wait()
        for helper in (tftp, ra):
            if helper is not None:
                helper.kill()
                helper.wait()
        if dhcpd is not None:
            dhcpd.stop()
        net.teardown()
    console = serial.read_text(errors="replace")
    lines = [line.strip() for line in console.splitlines() if "provision-installer:" in line]
    assert lines and lines[0].startswith(MARKER), console[-3000:]
    assert any("network eth0 10.66.0.11/24" in line for line in lines), lines
    assert any("python 3.11" in line for line in lines), lines
    served = tftp_log.read_text()
    for name in (*LOADER_FILES[firmware], "boot/vmlinuz-", "boot/initrd.img"):
        assert re.search(rf"^tftp: sent /?{re.escape(name)}", served, re.M), served  # GRUB asks with a leading /
    assert f"DHCPACK on 10.66.0.11 to {MAC}" in dhcpd.log_file.read_text()
    print(f"\nPXE ({firmware}, TCG): QEMU start to power-off {seconds:.1f} s; " + "; ".join(lines))
    print("\n".join(line for line in served.splitlines() if "FAILED" in line or "boot/" in line or "cfg" in line))
