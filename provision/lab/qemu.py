"""QEMU command lines for lab machines: TCG (this machine's KVM cannot run firmware), a NIC with the
inventory's MAC on a tap, the firmware's text on a serial log, and an optional disk image.

BIOS: SeaBIOS with the iPXE ROM of the NIC (package ipxe-qemu); UEFI: OVMF code + a private copy of its
variable store as pflash, the NIC's iPXE first in the boot order (docs/lab.md, QEMU facts 1, 3-5). `graphics=off`
makes SeaBIOS print to the serial port (what `-device sga` did).

The CPU model stays QEMU's default (qemu64), on purpose: `-cpu max` (or Nehalem) makes OpenSSL and zlib
take SIMD paths that TCG runs slower than their plain ones (SHA-256 ~19 instead of ~95 MiB/s, CRC-32 and
memcpy slower too; measured with qemu-user on this machine), and the ring's nodes spend their CPU there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provision.model import Firmware

QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")  # Debian package ovmf
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


@dataclass(frozen=True)
class Machine:
    name: str
    mac: str
    tap: str                    # tap interface (in the namespace QEMU runs in)
    serial_log: Path
    firmware: Firmware = Firmware.BIOS
    disk: Path | None = None    # raw disk image (the machine writes to it, unless `snapshot`)
    snapshot: bool = False      # writes go to a temporary overlay: the disk image stays as it was
    efi_vars: Path | None = None  # this machine's copy of OVMF_VARS (UEFI only)
    memory_mib: int = 768
    nic_model: str = "virtio-net-pci"  # or a real machine's NIC: e1000e (Intel 82574)

    def argv(self) -> list[str]:
        argv = [QEMU, "-name", self.name, "-machine", "pc,accel=tcg,graphics=off", "-m", str(self.memory_mib),
                "-display", "none", "-monitor", "none", "-nodefaults", "-serial", f"file:{self.serial_log}",
                "-netdev", f"tap,id=net0,ifname={self.tap},script=no,downscript=no",
                "-device", f"{self.nic_model},netdev=net0,mac={self.mac},bootindex=0"]
        if self.firmware is Firmware.UEFI:
            if self.efi_vars is None:
                raise ValueError(f"{self.name}: a UEFI machine needs its own copy of {OVMF_VARS}")
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={self.efi_vars}"]
        if self.disk is not None:
            snapshot = ",snapshot=on" if self.snapshot else ""
            argv += ["-drive", f"if=none,id=disk0,format=raw,file={self.disk}{snapshot}",
                     "-device", "virtio-blk-pci,drive=disk0,bootindex=1"]
        return argv
