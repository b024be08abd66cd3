"""The validated inventory as frozen typed objects (built by provision.inventory, read everywhere else).

They are also the inventory's schema: a section's keys are its class's fields, in order; the required ones
are those without a default (provision.inventory.schema). Field metadata marks the exceptions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from provision.errors import InputError

DOLLY_PORT = 9998
HTTP_PORT = 8080
BOOT_TFTP_DIR = "boot"  # kernel and initrd live in <tftp root>/boot/
MULTICAST_TFTP_PORT = 1069  # atftpd's requests (boot.transport: multicast); port 69 stays provision's own TFTP
MULTICAST_GROUPS = ("239.255.69.1", "239.255.69.16")  # organization-local scope (RFC 2365): one group per file
MULTICAST_DATA_PORTS = (1758, 1790)
GRUB_TFTP_DIR = "grub"  # grub-mknetdir --subdir: GRUB's net image and the per-MAC GRUB configs
GRUB_EFI_LOADER = f"{GRUB_TFTP_DIR}/x86_64-efi/core.efi"  # the UEFI boot file dhcpd names (option 93 = 7, 9)
# Field metadata: a field the inventory may leave out though it has no default here (the reader fills it in,
# or requires it case by case), and one that is no inventory key at all.
OPTIONAL_KEY = MappingProxyType({"inventory": "optional"})
NOT_A_KEY = MappingProxyType({"inventory": "no key"})


class IPv4(IPv4Address):
    """An IPv4Address that formats itself once (a render prints each address many times)."""

    __slots__ = ("_text",)

    def __str__(self) -> str:
        try:
            return self._text
        except AttributeError:
            self._text = text = super().__str__()
            return text


class OsFamily(enum.StrEnum):
    """Decides the format of the network config that %post writes onto the clone."""

    REDHAT = "redhat"  # /etc/sysconfig/network-scripts/ifcfg-<interface>
    DEBIAN = "debian"  # /etc/network/interfaces


class Firmware(enum.StrEnum):
    """What boots the node from the network: decides its loader config (pxelinux or GRUB) and boot files."""

    BIOS = "bios"  # legacy BIOS PXE (DHCP option 93 = 0): pxelinux.0
    UEFI = "uefi"  # x86-64 UEFI (option 93 = 7 or 9): GRUB's network image from grub-mknetdir


class Transport(enum.StrEnum):
    """How a node's loader fetches the installer kernel and initrd (the small files always go over TFTP)."""

    HTTP = "http"  # from our HTTP server: BIOS nodes get pxelinux.0 on iPXE, else lpxelinux.0; GRUB its http module
    TFTP = "tftp"  # from the TFTP root, as pxelinux.0 and GRUB's tftp do everywhere
    # pxelinux.0 hands tftm:// URLs (RFC 2090 multicast TFTP) to the firmware's client (iPXE's, with
    # docs/ipxe-tftm-memset.patch), atftpd answers: one stream for all nodes booting at once; GRUB (UEFI) has
    # no multicast client and fetches from the TFTP root as with tftp
    MULTICAST = "multicast"


class DhcpServer(enum.StrEnum):
    """Which DHCP server provision runs for the cluster."""

    ISC = "isc"  # ISC dhcpd: dhcpd.conf, a restart applies a changed config
    KEA = "kea"  # ISC Kea (kea-dhcp4): kea-dhcp4.conf, applied with config-reload over its control socket


class DiskLabel(enum.StrEnum):
    """The partition table the installer writes (the kickstart's `clearpart --disklabel=`)."""

    GPT = "gpt"
    MSDOS = "msdos"  # an MBR: four primary partitions, BIOS GRUB's core.img in the gap after it


BIOSBOOT = "biosboot"  # a partition's fstype (and kickstart mount point): GRUB's core.img on a BIOS+GPT disk


class Bootloader(enum.StrEnum):
    GRUB2 = "grub2"
    LILO = "lilo"
    NONE = "none"  # nothing to install (the namespace lab: a node's "disk" is a directory)


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    ip: IPv4Address
    http_port: int = HTTP_PORT
    dolly_port: int = DOLLY_PORT
    node_auth: bool = True  # false: the HTTP API takes node reports from any address (the install logs it)

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.http_port}"


@dataclass(frozen=True, slots=True)
class Network:
    subnet: IPv4Network
    gateway: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    domain: str | None = None
    ipv6_ra: bool = False  # `provision install` sends IPv6 router advertisements (offering nothing) meanwhile

    @property
    def netmask(self) -> IPv4Address:
        return self.subnet.netmask

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen


@dataclass(frozen=True, slots=True)
class Boot:
    """Installer kernel and initrd (paths on the server), the kernel command line, and how loaders fetch them."""

    kernel: str
    initrd: str
    append: str = ""
    transport: Transport = Transport.TFTP
    # a directory holding what diskless nodes boot (vmlinuz, initrd.img, root.squashfs, root.squashfs.sha256:
    # `provision images --diskless` prints one); needed only while a node is in diskless boot
    diskless: str | None = None

    @property
    def kernel_tftp_path(self) -> str:
        return f"{BOOT_TFTP_DIR}/{PurePosixPath(self.kernel).name}"

    @property
    def initrd_tftp_path(self) -> str:
        return f"{BOOT_TFTP_DIR}/{PurePosixPath(self.initrd).name}"

    @property
    def tftp_files(self) -> dict[str, Path]:
        """Path inside the TFTP root -> source file on the server."""
        return {self.kernel_tftp_path: Path(self.kernel), self.initrd_tftp_path: Path(self.initrd)}


@dataclass(frozen=True, slots=True)
class Image:
    """One dolly transfer: `source > target` (raw) or `source >> target` (cooked: unpacked on the fly)."""

    source: str
    target: str
    cook: bool = False

    @property
    def operator(self) -> str:
        return ">>" if self.cook else ">"


@dataclass(frozen=True, slots=True)
class Partition:
    mount: str = field(metadata=OPTIONAL_KEY)  # absolute mount point, or "swap" (a biosboot partition: none)
    fstype: str
    size: int = field(metadata=OPTIONAL_KEY)  # MiB (the minimum when grow is set); biosboot: 1 by default
    grow: bool = False
    label: str = ""
    options: str = "defaults"

    @property
    def is_swap(self) -> bool:
        return self.mount == "swap"

    @property
    def is_biosboot(self) -> bool:
        """GRUB's partition on a GPT disk of a BIOS machine: no file system, no mount, not in fstab."""
        return self.fstype == BIOSBOOT

    @property
    def fstab_spec(self) -> str:
        return f"LABEL={self.label}"

    @property
    def fstab_mount(self) -> str:
        return "none" if self.is_swap else self.mount

    @property
    def fsck_pass(self) -> int:
        return 0 if self.is_swap else 1 if self.mount == "/" else 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Disk:
    device: str = "sda"  # kernel name
    label: DiskLabel | None = None  # None: by the node's firmware (Node.disk_label)
    partitions: tuple[Partition, ...]

    @property
    def path(self) -> str:
        return f"/dev/{self.device}"

    @property
    def fstab_partitions(self) -> tuple[Partition, ...]:
        """The partitions /etc/fstab lists (all but a biosboot one)."""
        return tuple(p for p in self.partitions if not p.is_biosboot)

    @property
    def biosboot(self) -> Partition | None:
        return next((p for p in self.partitions if p.is_biosboot), None)


class FileDigest(enum.StrEnum):
    """Each image's plain digest in dollyS's report (dollyS --digest); the clone is verified the same either way."""

    SHA256 = "sha256"  # as sha256sum prints it
    BLAKE3 = "blake3"  # as b3sum prints it: about a third of SHA-256's CPU on the install server
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Dolly:
    """Settings of the ring cloner: `secret_file` holds the site's ring secret (None: a new one per install);
    `digest` is the images' plain digest in dollyS's report."""

    secret_file: Path | None = None  # absolute (a relative one is taken from the inventory file's directory)
    digest: FileDigest = FileDigest.SHA256


@dataclass(frozen=True, slots=True)
class Ring:
    """How `provision install` clones: the ready nodes split into `count` rings (contiguous slices of the
    ring order), one dollyS each, all started together; ring i closes back to the server's dolly_port + i."""

    count: int = 1
    wait: float = 10.0     # dollyS --wait: how long a member keeps dialling its first successor before short-cutting it
    timeout: float = 10.0  # dollyS --timeout: a member silent this long is dead (install --timeout overrides it)


@dataclass(frozen=True, slots=True)
class Dhcp:
    """The cluster's DHCP server."""

    server: DhcpServer = DhcpServer.ISC


@dataclass(frozen=True, slots=True)
class KickstartSettings:
    lang: str = "en_US.UTF-8"
    keyboard: str = "us"
    timezone: str = "UTC"


class BmcType(enum.StrEnum):
    """The protocol provision.power speaks to a node's BMC."""

    IPMI = "ipmi"  # IPMI v2.0 over LAN (RMCP+, UDP port 623)
    REDFISH = "redfish"  # DMTF Redfish over HTTPS (or http:// given in the address)


IPMI_PORT = 623
# RMCP+ cipher suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128): the one IPMI v2.0 requires every BMC to have
IPMI_CIPHER_SUITE = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Bmc:
    """A node's baseboard management controller. The password is never in the inventory: it is read when used,
    from `password_file` (mode 0600 or stricter) or from the environment variable `password_env`."""

    type: BmcType = BmcType.IPMI
    address: str | None = None  # host name or IP (Redfish: also http://host or https://host); required per node
    port: int | None = None  # None: 623 for IPMI, the URL scheme's port for Redfish
    user: str | None = None  # required per node
    password_file: Path | None = None  # absolute (a relative one is taken from the inventory file's directory)
    password_env: str | None = None
    system: str | None = None  # Redfish: the ComputerSystem's id under /redfish/v1/Systems (None: the only one)
    cipher_suite: int | None = None  # IPMI: the RMCP+ cipher suite (ipmitool -C; None: IPMI_CIPHER_SUITE)
    verify: bool = True  # Redfish over https: check the service's certificate (false: accept any)
    ca_file: Path | None = None  # Redfish over https: check it against these CA certificates (PEM), not the system's

    @property
    def where(self) -> str:
        """How messages name the BMC: "ipmi 10.0.0.101:623"."""
        port = self.port or (IPMI_PORT if self.type == BmcType.IPMI else None)
        return f"{self.type} {self.address}" + (f":{port}" if port else "")


DEFAULT_DISK = Disk(partitions=(Partition("/", "ext4", 4096, grow=True, label="root"),))


@dataclass(frozen=True, slots=True)
class Node:
    """One cluster node with its effective settings (inventory defaults merged with its own overrides): the
    fields with a default are its settings, which the inventory's `defaults:` section may also give."""

    name: str
    mac: str  # lower case, colon separated
    ip: IPv4Address
    interface: str = "eth0"
    os_family: OsFamily = OsFamily.REDHAT
    bootloader: Bootloader = Bootloader.GRUB2
    firmware: Firmware = Firmware.BIOS
    disk: Disk = DEFAULT_DISK
    dolly_port: int = DOLLY_PORT
    append: str = ""  # extra kernel arguments for this node's installer
    root_password_hash: str | None = None  # a crypt(3) hash; None locks the root password
    # root's SSH public keys: OpenSSH key lines, or absolute paths of files of them (read when rendering)
    ssh_authorized_keys: tuple[str, ...] = ()
    bmc: Bmc | None = None  # its BMC, for `provision power` and `install --power-cycle`

    @property
    def disk_label(self) -> DiskLabel:
        """The disk's partition table: its `label`, else GPT on UEFI and MBR (msdos) on BIOS."""
        if self.disk.label is not None:
            return self.disk.label
        return DiskLabel.GPT if self.firmware == Firmware.UEFI else DiskLabel.MSDOS

    @property
    def pxelinux_name(self) -> str:
        """The per-MAC pxelinux config file name: 01-aa-bb-cc-dd-ee-ff (01 = Ethernet)."""
        return "01-" + self.mac.replace(":", "-")

    @property
    def grub_config_name(self) -> str:
        """The per-MAC GRUB config file name that GRUB's net boot looks for first: grub.cfg-01-aa-bb-..."""
        return "grub.cfg-" + self.pxelinux_name


@dataclass(frozen=True, kw_only=True)
class Inventory:
    path: Path = field(metadata=NOT_A_KEY)  # the inventory file
    cluster: str = field(metadata=OPTIONAL_KEY)  # by default the file's name without its suffix
    server: Server
    network: Network
    boot: Boot
    images: tuple[Image, ...]
    kickstart: KickstartSettings = KickstartSettings()
    dolly: Dolly = Dolly()
    dhcp: Dhcp = Dhcp()
    ring: Ring = Ring()
    nodes: tuple[Node, ...]  # ring order
    # defaults.bmc: what a node given only `bmc: {address: ..}` has (discovery through a BMC range writes that)
    default_bmc: Bmc | None = field(default=None, metadata=NOT_A_KEY)
    _by_name: dict[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {n.name: n for n in self.nodes})

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(f"{self.path}: no node named {name!r} in the inventory") from None

    def fqdn(self, name: str) -> str:
        return f"{name}.{self.network.domain}" if self.network.domain else name
