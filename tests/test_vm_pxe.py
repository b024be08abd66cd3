"""Real firmware against our servers: one QEMU machine (TCG) on a tap in a lab bridge PXE-boots from our
dhcpd and our tftpy server -- BIOS: SeaBIOS + the NIC's iPXE -> pxelinux.0 -> pxelinux.cfg/01-<mac>;
UEFI: OVMF + the NIC's iPXE EFI ROM -> GRUB's core.efi (DHCP option 93) -> grub/grub.cfg-01-<mac> --
then the installer kernel and initrd built from Debian packages (BIOS: over TFTP; UEFI: GRUB fetches
them from our HTTP server, boot.transport http), whose /init reports on the serial console and powers
off. Our router advertisement ends iPXE's IPv6 wait. One VM at a time."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet6 import IPv6, ICMPv6ND_RA

from provision.bootmode import BootMode
from provision.images.golden import golden_image
from provision.images.initrd import MARKER, installer_initrd
from provision.inventory import load_inventory
from provision.model import Firmware
from provision.lab.qemu import OVMF_VARS, Machine
from provision.services.ra import advertisement
from provision.render import render_to
from provision.services.dhcpd import DhcpdProcess
from provision.services.tftp import install_boot_files
from tests.vm_rig import Rig, require_vm, serial_text, serve_boot_files, serve_http, vm_rig, wait_for_prompt

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


def inventory_text(kernel: Path, initrd: Path, firmware: Firmware, transport: str = "tftp") -> str:
    return f"""cluster: pvq
server: {{name: srv, ip: 10.66.0.1}}
network: {{subnet: 10.66.0.0/24}}
boot:
  kernel: {kernel}
  initrd: {initrd}
  append: console=ttyS0,115200 provision.poweroff
  transport: {transport}
images:
  - {{source: /nonexistent/image.raw, target: /dev/vda1}}
nodes:
  - {{name: vm1, mac: "{MAC}", ip: 10.66.0.11, firmware: {firmware}}}
"""


# what the firmware must fetch from our TFTP server, in addition to the kernel and initrd
LOADER_FILES = {
    Firmware.BIOS: ("pxelinux.0", "ldlinux.c32", "pxelinux.cfg/01-52-54-00-66-00-11"),
    Firmware.UEFI: ("grub/x86_64-efi/core.efi", "grub/x86_64-efi/normal.mod", "grub/grub.cfg-01-52-54-00-66-00-11"),
}


@dataclass
class PxeRig:
    """The one-VM rig (tests/vm_rig.py) serving the rendered boot files with our dhcpd and tftpy server."""

    rig: Rig
    dhcpd: DhcpdProcess
    tftp_log: Path
    http_log: Path

    def tftp_sent(self, name: str) -> bool:
        return re.search(rf"^tftp: sent /?{re.escape(name)}", self.tftp_log.read_text(), re.M) is not None

    def http_sent(self, name: str) -> bool:
        return (self.http_log.exists() and
                re.search(rf"^http: sent {re.escape(name)}", self.http_log.read_text(), re.M) is not None)


@contextlib.contextmanager
def pxe_rig(tmp_path: Path, firmware: Firmware, modes: dict[str, BootMode],
            transport: str = "tftp") -> Iterator[PxeRig]:
    """Render the one-VM inventory with `modes`, install the boot files, serve them (with `transport`
    http also /boot/ over HTTP); tear down after."""
    initrd = installer_initrd()
    inv_path = tmp_path / "pvq.yaml"
    inv_path.write_text(inventory_text(initrd.kernel.vmlinuz, initrd.path, firmware, transport))
    inv = load_inventory(inv_path)
    rendered = tmp_path / "rendered"
    render_to(rendered, inv, boot_modes=modes)
    install_boot_files(rendered / "tftpboot", inv.boot, uefi=firmware is Firmware.UEFI)
    with vm_rig("pvq", "10.66.0.1/24") as rig:
        dhcpd = serve_boot_files(rig, rendered, tmp_path / "tftp.log")
        if transport == "http":
            serve_http(rig, rendered / "kickstart", tmp_path / "http.log", boot_dir=rendered / "tftpboot" / "boot")
        yield PxeRig(rig, dhcpd, tmp_path / "tftp.log", tmp_path / "http.log")


def _efi_vars(tmp_path: Path, firmware: Firmware) -> Path | None:
    if firmware is not Firmware.UEFI:
        return None
    shutil.copyfile(OVMF_VARS, tmp_path / "OVMF_VARS.fd")
    return tmp_path / "OVMF_VARS.fd"


@pytest.mark.vm
@pytest.mark.parametrize("firmware", list(Firmware), ids=[f.value for f in Firmware])
def test_vm_pxe_boots_our_installer(tmp_path, firmware):
    """BIOS loads the kernel and initrd over TFTP (pxelinux.0), UEFI over HTTP (GRUB's http module)."""
    require_vm(firmware)
    serial = tmp_path / "serial.log"
    transport = "http" if firmware is Firmware.UEFI else "tftp"
    with pxe_rig(tmp_path, firmware, {}, transport) as rig:
        machine = Machine("vm1", MAC, rig.rig.tap, serial, firmware, efi_vars=_efi_vars(tmp_path, firmware))
        started = time.monotonic()
        qemu = rig.rig.power_on(machine)
        try:
            qemu.wait(timeout=300)  # /init powers the machine off (provision.poweroff)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the VM did not power off within 300 s; serial log:\n{serial_text(serial)[-3000:]}")
        seconds = time.monotonic() - started
        for name in LOADER_FILES[firmware]:
            assert rig.tftp_sent(name), rig.tftp_log.read_text()
        for name in ("boot/vmlinuz-", "boot/initrd.img"):
            if transport == "http":
                assert rig.http_sent(name) and not rig.tftp_sent(name), rig.http_log.read_text()
            else:
                assert rig.tftp_sent(name), rig.tftp_log.read_text()
        assert f"DHCPACK on 10.66.0.11 to {MAC}" in rig.dhcpd.log_file.read_text()
    lines = [line.strip() for line in serial_text(serial).splitlines() if "provision-installer:" in line]
    assert lines and lines[0].startswith(MARKER), serial_text(serial)[-3000:]
    assert any("network eth0 10.66.0.11/24" in line for line in lines), lines
    assert any("python 3.11" in line for line in lines), lines
    print(f"\nPXE ({firmware}, kernel over {transport}, TCG): QEMU start to power-off {seconds:.1f} s; "
          + "; ".join(lines))


@pytest.mark.vm
@pytest.mark.parametrize("firmware", list(Firmware), ids=[f.value for f in Firmware])
def test_vm_on_local_boot_starts_its_own_disk(tmp_path, firmware):
    """The node flipped to local boot: the firmware still PXE-boots our loader, whose per-MAC config
    (pxelinux LOCALBOOT 0 / GRUB's chainload of the disk's EFI loader) hands over to the disk, which holds
    the golden image; it comes up to its login prompt without fetching the installer."""
    require_vm(firmware, "mmdebstrap")
    golden = golden_image()
    serial = tmp_path / "serial.log"
    with pxe_rig(tmp_path, firmware, {"vm1": BootMode.LOCAL}) as rig:
        machine = Machine("vm1", MAC, rig.rig.tap, serial, firmware, disk=golden.disk, snapshot=True,
                          efi_vars=_efi_vars(tmp_path, firmware))
        started = time.monotonic()
        seconds = wait_for_prompt(rig.rig.power_on(machine), serial, "golden login:", 300, started)
        assert rig.tftp_sent(LOADER_FILES[firmware][-1]), rig.tftp_log.read_text()  # the per-MAC config
        assert not rig.tftp_sent("boot/vmlinuz-"), rig.tftp_log.read_text()  # no installer
    print(f"\nlocal boot ({firmware}, TCG): QEMU start to the disk's login prompt {seconds:.1f} s")
