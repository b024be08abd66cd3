"""Inventory: the shipped inventories load; every kind of bad input is reported with file, line, field, value."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from tests.fixtures.inventories import EXAMPLE, HASH, LAB, inventory_yaml, snapshot, write

from provision.cli import main
from provision.errors import ExitStatus, InputError
from provision.inventory import load_inventory, resolve_inventory_path
from provision.model import Bootloader, DhcpServer, DiskLabel, Dolly, FileDigest, OsFamily, Transport


def test_example_is_the_seed_cluster():
    inv = load_inventory(EXAMPLE)
    assert inv.server.name == "n000"
    assert inv.node_names == tuple(f"n{i:03d}" for i in range(1, 21))
    assert [(i.source, i.operator, i.target) for i in inv.images] == [
        ("/dev/hda1", ">", "/dev/hda1"),
        ("/data/file.gz", ">>", "/data/file"),
        ("boot.tar.Z", ">>", "/boot"),
    ]
    assert inv.server.http_port == 8080 and inv.server.dolly_port == 9998
    assert inv.node("n007").mac == "00:16:3e:10:00:07"


def test_lab_inventory_stays_in_its_private_range():
    inv = load_inventory(LAB)
    assert inv.network.subnet == IPv4Network("10.77.0.0/24") and inv.network.subnet.is_private
    assert (inv.server.name, inv.server.ip) == ("lab-srv", IPv4Address("10.77.0.1"))
    assert inv.node_names == tuple(f"n{i:02d}" for i in range(1, 17))
    assert all(int(n.mac[:2], 16) & 2 for n in inv.nodes)  # locally administered
    assert all(n.bootloader is Bootloader.NONE for n in inv.nodes)
    assert [(i.source, i.target, i.cook) for i in inv.images] == [
        ("/var/lib/provision/lab/image.raw", "/dev/sda1", False)
    ]
    assert inv.boot.tftp_files == {
        "boot/vmlinuz": __import__("pathlib").Path("/var/lib/provision/lab/boot/vmlinuz"),
        "boot/initrd.img": __import__("pathlib").Path("/var/lib/provision/lab/boot/initrd.img"),
    }


def test_defaults_and_per_node_overrides(tmp_path):
    extra = (
        '  - {name: big, mac: "AA-BB-CC-DD-EE-00", ip: 10.9.0.200, bootloader: lilo, dolly_port: 9000,\n'
        "     disk: {device: vda, partitions: [{mount: /, fstype: ext4, size: 100}]}}\n"
        "  - {name: sexagesimal, mac: 10:20:30:40:50:60, ip: 10.9.0.201}\n"
    )
    inv = load_inventory(write(tmp_path, inventory_yaml(2, extra_nodes=extra)))
    plain, big, sexa = inv.node("node001"), inv.node("big"), inv.node("sexagesimal")
    assert (plain.bootloader, plain.os_family, plain.dolly_port, plain.interface) == (
        Bootloader.GRUB2, OsFamily.REDHAT, 9998, "eth0")
    assert plain.disk.device == "sda" and [p.mount for p in plain.disk.partitions] == ["/"]
    assert plain.root_password_hash == HASH
    assert (big.bootloader, big.dolly_port, big.disk.device, big.mac) == (
        Bootloader.LILO, 9000, "vda", "aa:bb:cc:dd:ee:00")
    assert big.root_password_hash == HASH  # not overridden: the default
    assert sexa.mac == "10:20:30:40:50:60"  # YAML 1.1 would read a base-60 number
    assert inv.node_names[-2:] == ("big", "sexagesimal")  # ring order = file order


BIOS_GPT_DISK = ("disk: {device: vda, label: gpt, partitions: [{mount: /, fstype: ext4, size: 1600, grow: true},"
                 " {fstype: biosboot}]}")


def test_disk_label_by_firmware_unless_given_and_biosboot_partition(tmp_path):
    extra = (f'  - {{name: uefi, mac: "02:00:00:00:01:01", ip: 10.9.0.200, firmware: uefi}}\n'
             f'  - {{name: biosgpt, mac: "02:00:00:00:01:02", ip: 10.9.0.201, {BIOS_GPT_DISK}}}\n'
             '  - {name: uefimbr, mac: "02:00:00:00:01:03", ip: 10.9.0.202, firmware: uefi,\n'
             '     disk: {label: msdos, partitions: [{mount: /, fstype: ext4, size: 100}]}}\n')
    inv = load_inventory(write(tmp_path, inventory_yaml(1, extra_nodes=extra)))
    labels = {n.name: (n.disk.label, n.disk_label) for n in inv.nodes}
    assert labels == {"node001": (None, DiskLabel.MSDOS), "uefi": (None, DiskLabel.GPT),
                      "biosgpt": (DiskLabel.GPT, DiskLabel.GPT), "uefimbr": (DiskLabel.MSDOS, DiskLabel.MSDOS)}
    disk = inv.node("biosgpt").disk
    boot = disk.biosboot
    assert (boot.mount, boot.fstype, boot.size, boot.grow, boot.label) == ("biosboot", "biosboot", 1, False, "biosboot")
    assert [p.mount for p in disk.fstab_partitions] == ["/"]  # not in fstab
    assert inv.node("node001").disk.biosboot is None
    # size and label of a biosboot partition may be given
    text = inventory_yaml(1, defaults=BIOS_GPT_DISK.replace("{fstype: biosboot}",
                                                            "{fstype: biosboot, size: 2, label: grub}"))
    (node,) = load_inventory(write(tmp_path, text)).nodes
    assert (node.disk.biosboot.size, node.disk.biosboot.label) == (2, "grub")


def test_lab_vm_inventory_has_a_bios_node_on_gpt():
    inv = load_inventory(LAB.with_name("lab-vm.yaml"))
    assert [(n.name, n.firmware.value, n.disk_label.value, n.disk.biosboot is not None) for n in inv.nodes] == [
        ("n01", "bios", "msdos", False), ("n02", "bios", "gpt", True), ("n03", "uefi", "gpt", False)]
    assert inv.node("n02").disk.partitions[0].mount == "/"  # the image's target /dev/vda1 stays the root


def test_a_disk_problem_of_the_defaults_is_reported_once_not_per_node(tmp_path):
    with pytest.raises(InputError) as caught:
        load_inventory(write(tmp_path, inventory_yaml(5, defaults=BIOS_GPT_DISK.replace("{fstype: biosboot}",
                                                                                         "{mount: /d, fstype: ext4, size: 1}"))))
    assert str(caught.value).count("GRUB needs a biosboot partition") == 1, caught.value


def test_image_targets_on_partitions_that_receive_a_file_system_are_accepted(tmp_path):
    """/ need not be partition 1; any partition with a file system may receive an image; targets on another
    disk, files and cooked targets are not partitions of the node's disk; lilo on a BIOS node's msdos disk."""
    disk = ("disk: {label: gpt, partitions: [{fstype: biosboot}, {mount: swap, fstype: swap, size: 5},"
            " {mount: /, fstype: ext4, size: 5}, {mount: /data, fstype: vfat, size: 5}]}")
    text = inventory_yaml(3, defaults=disk).replace("  - {source: /srv/image.raw, target: /dev/sda1}\n", "".join(
        f"  - {{source: /srv/{i}, target: {target}}}\n" for i, target in enumerate(
            ["/dev/sda3", "/dev/sda4", "/dev/sdb1", "/dev/sda", "/srv/file", "/dev/sda12x"]))
        + "  - {source: /srv/x.tar.gz, target: /dev/sda1, cook: true}\n")
    assert len(load_inventory(write(tmp_path, text)).images) == 7
    lilo = inventory_yaml(2, defaults="bootloader: lilo\ndisk: {label: msdos, partitions: [{mount: /, fstype: ext4,"
                                      " size: 5}]}")
    assert {n.bootloader for n in load_inventory(write(tmp_path, lilo)).nodes} == {Bootloader.LILO}


def test_an_image_target_problem_is_said_once_per_disk_layout_naming_its_nodes(tmp_path):
    swap_first = "disk: {partitions: [{mount: swap, fstype: swap, size: 5}, {mount: /, fstype: ext4, size: 5}]}"
    own = ('  - {name: own, mac: "02:00:00:00:01:01", ip: 10.9.0.200,\n'
           "     disk: {label: gpt, partitions: [{mount: /, fstype: ext4, size: 5}, {fstype: biosboot}]}}\n")
    text = inventory_yaml(20, defaults=swap_first, extra_nodes=own)
    text = text.replace("  - {source: /srv/image.raw, target: /dev/sda1}\n",
                        "  - {source: /srv/a, target: /dev/sda1}\n  - {source: /srv/b, target: /dev/sda2}\n")
    with pytest.raises(InputError) as caught:
        load_inventory(write(tmp_path, text))
    problems = [line.split(": ", 2)[1:] for line in str(caught.value).splitlines()[1:]]
    assert problems == [
        ["images[0].target", "/dev/sda1 is the swap partition of node001, node002, node003 and 17 more (partition 1 "
         "of disk sda, defaults.disk.partitions[0]); an image goes onto / or another partition with a file system: "
         "'/dev/sda1'"],
        ["images[1].target", "/dev/sda2 is own's biosboot partition (partition 2 of disk sda, "
         "nodes[20].disk.partitions[1]); an image goes onto / or another partition with a file system: '/dev/sda2'"],
    ], caught.value


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


BASE = inventory_yaml(3)

# (id, changed inventory text, field path, value shown, text on the offending line)
BAD = [
    ("unknown-top-key", BASE + "colour: blue\n", "colour", "'colour'", "colour: blue"),
    ("unknown-node-key", BASE.replace("ip: 10.9.0.3}", "ip: 10.9.0.3, macc: x}"),
     "nodes[1].macc", "'macc'", "node002"),
    ("malformed-mac", BASE.replace('"02:00:00:00:00:02"', '"02:00:00:00:0g:02"'),
     "nodes[1].mac", "'02:00:00:00:0g:02'", "node002"),
    ("multicast-mac", BASE.replace('"02:00:00:00:00:02"', '"01:00:5e:00:00:02"'),
     "nodes[1].mac", "'01:00:5e:00:00:02'", "node002"),
    ("malformed-ip", BASE.replace("ip: 10.9.0.3}", "ip: 10.9.0.300}"), "nodes[1].ip", "'10.9.0.300'", "node002"),
    ("ip-outside-subnet", BASE.replace("ip: 10.9.0.3}", "ip: 10.8.0.3}"), "nodes[1].ip", "'10.8.0.3'", "node002"),
    ("broadcast-ip", BASE.replace("ip: 10.9.0.3}", "ip: 10.9.0.255}"), "nodes[1].ip", "'10.9.0.255'", "node002"),
    ("server-ip-reused", BASE.replace("ip: 10.9.0.3}", "ip: 10.9.0.1}"), "nodes[1].ip", "'10.9.0.1'", "node002"),
    ("server-name-reused", BASE.replace("name: node002", "name: SRV"), "nodes[1].name", "'srv'", "SRV"),
    ("gateway-ip-reused", BASE.replace("ip: 10.9.0.3}", "ip: 10.9.0.254}"),
     "nodes[1].ip", "'10.9.0.254'", "node002"),
    ("duplicate-name", BASE.replace("name: node003", "name: node001"), "nodes[2].name", "'node001'",
     '"02:00:00:00:00:03"'),
    ("duplicate-mac", BASE.replace('"02:00:00:00:00:03"', '"02:00:00:00:00:01"'),
     "nodes[2].mac", "'02:00:00:00:00:01'", "node003"),
    ("duplicate-ip", BASE.replace("ip: 10.9.0.4}", "ip: 10.9.0.2}"), "nodes[2].ip", "'10.9.0.2'", "node003"),
    ("hostname-underscore", BASE.replace("name: node002", "name: node_2"), "nodes[1].name", "'node_2'", "node_2"),
    ("hostname-leading-hyphen", BASE.replace("name: node002", "name: -node2"),
     "nodes[1].name", "'-node2'", "-node2"),
    ("hostname-label-too-long", BASE.replace("name: node002", "name: " + "a" * 64),
     "nodes[1].name", "'" + "a" * 64 + "'", "a" * 64),
    ("image-without-source", BASE.replace("{source: /srv/image.raw, target: /dev/sda1}", "{target: /dev/sda1}"),
     "images[0].source", "missing required field", "target: /dev/sda1"),
    ("image-without-target", BASE.replace("{source: /srv/image.raw, target: /dev/sda1}", "{source: /srv/x}"),
     "images[0].target", "missing required field", "source: /srv/x"),
    ("image-relative-target", BASE.replace("target: /dev/sda1", "target: dev/sda1"),
     "images[0].target", "'dev/sda1'", "dev/sda1"),
    ("gateway-outside-subnet", BASE.replace("gateway: 10.9.0.254", "gateway: 10.10.0.254"),
     "network.gateway", "'10.10.0.254'", "gateway:"),
    ("subnet-not-cidr", BASE.replace("subnet: 10.9.0.0/24", "subnet: 10.9.0.0"),
     "network.subnet", "'10.9.0.0'", "subnet:"),
    ("bad-port", BASE.replace("  ip: 10.9.0.1\n", "  ip: 10.9.0.1\n  http_port: 70000\n"),
     "server.http_port", "70000", "http_port"),
    ("bad-bootloader", BASE.replace("ip: 10.9.0.3}", "ip: 10.9.0.3, bootloader: grub}"),
     "nodes[1].bootloader", "'grub'", "node002"),
    ("bad-firmware", BASE.replace("ip: 10.9.0.3}", "ip: 10.9.0.3, firmware: efi}"),
     "nodes[1].firmware", "'efi'", "node002"),
    ("bad-default-firmware", inventory_yaml(3, defaults="firmware: UEFI"), "defaults.firmware", "'UEFI'",
     "firmware: UEFI"),
    ("disk-without-root", inventory_yaml(3, defaults="disk: {partitions: [{mount: /data, fstype: ext4, size: 5}]}"),
     "defaults.disk.partitions", "no partition is mounted on /", "disk:"),
    ("swap-with-ext4", inventory_yaml(3, defaults="disk: {partitions: [{mount: /, fstype: ext4, size: 5},"
                                                  " {mount: swap, fstype: ext4, size: 5}]}"),
     "defaults.disk.partitions[1].fstype", "'ext4'", "disk:"),
    ("bad-disk-label", inventory_yaml(3, defaults="disk: {label: mbr, partitions: [{mount: /, fstype: ext4, size: 5}]}"),
     "defaults.disk.label", "expected one of gpt, msdos: 'mbr'", "disk:"),
    ("bios-gpt-without-biosboot", BASE.replace(
        "ip: 10.9.0.3}", "ip: 10.9.0.3,\n     disk: {label: gpt, partitions: [{mount: /, fstype: ext4, size: 5}]}}"),
     "nodes[1].disk", "GRUB needs a biosboot partition", "label: gpt"),
    ("bios-override-of-a-gpt-default", inventory_yaml(
        3, defaults="firmware: uefi\ndisk: {label: gpt, partitions: [{mount: /, fstype: ext4, size: 5}]}")
     .replace("ip: 10.9.0.3}", "ip: 10.9.0.3, firmware: bios}"),
     "nodes[1].firmware", "firmware bios, bootloader grub2, disk label gpt", "node002"),
    ("biosboot-on-explicit-msdos", inventory_yaml(3, defaults=BIOS_GPT_DISK.replace("gpt", "msdos")),
     "defaults.disk.partitions[1].fstype", "needs label: gpt", "disk:"),
    ("biosboot-on-bios-default-label", inventory_yaml(3, defaults=BIOS_GPT_DISK.replace("label: gpt, ", "")),
     "defaults.disk", "disk label msdos (firmware bios's default) with a biosboot partition", "disk:"),
    ("biosboot-mounted", inventory_yaml(3, defaults=BIOS_GPT_DISK.replace("{fstype: biosboot}",
                                                                         "{fstype: biosboot, mount: /boot}")),
     "defaults.disk.partitions[1].mount", "is not mounted (leave mount out): '/boot'", "disk:"),
    ("biosboot-grown", inventory_yaml(3, defaults=BIOS_GPT_DISK.replace("{fstype: biosboot}",
                                                                       "{fstype: biosboot, grow: true}")),
     "defaults.disk.partitions[1].grow", "takes no grow: True", "disk:"),
    ("two-biosboot", inventory_yaml(3, defaults=BIOS_GPT_DISK.replace("{fstype: biosboot}",
                                                                     "{fstype: biosboot}, {fstype: biosboot, label: b2}")),
     "defaults.disk.partitions[2].fstype", "a second biosboot partition", "disk:"),
    ("five-on-msdos", inventory_yaml(3, defaults="disk: {partitions: [{mount: /, fstype: ext4, size: 5}, " + ", ".join(
        f"{{mount: /d{i}, fstype: ext4, size: 5}}" for i in range(4)) + "]}"),
     "defaults.disk", "holds 4 partitions, the disk has 5", "disk:"),
    ("partition-without-size", inventory_yaml(3, defaults="disk: {partitions: [{mount: /, fstype: ext4}]}"),
     "defaults.disk.partitions[0].size", "missing required field", "disk:"),
    ("image-on-a-nodes-biosboot", BASE.replace("ip: 10.9.0.3}", "ip: 10.9.0.3,\n     disk: {label: gpt, partitions: "
                                               "[{fstype: biosboot}, {mount: /, fstype: ext4, size: 5}]}}"),
     "images[0].target", "/dev/sda1 is node002's biosboot partition (partition 1 of disk sda, "
     "nodes[1].disk.partitions[0]); an image goes onto / or another partition with a file system: '/dev/sda1'",
     "target: /dev/sda1"),
    ("image-on-swap-of-the-defaults", inventory_yaml(3, defaults="disk: {partitions: [{mount: swap, fstype: swap, "
                                                                 "size: 5}, {mount: /, fstype: ext4, size: 5}]}"),
     "images[0].target", "/dev/sda1 is the swap partition of node001, node002 and node003 (partition 1 of disk sda, "
     "defaults.disk.partitions[0])", "target: /dev/sda1"),
    ("image-on-the-esp", inventory_yaml(3, defaults="firmware: uefi\ndisk: {partitions: [{mount: /boot/efi, fstype: "
                                                    "vfat, size: 5}, {mount: /, fstype: ext4, size: 5}]}"),
     "images[0].target", "/dev/sda1 is the EFI system (/boot/efi) partition of node001, node002 and node003",
     "target: /dev/sda1"),
    ("image-on-a-partition-the-disk-lacks", BASE.replace("target: /dev/sda1", "target: /dev/sda2"),
     "images[0].target", "/dev/sda2 is no partition of the disk sda of node001, node002 and node003: it has 1 "
     "partition (the default disk): '/dev/sda2'", "target: /dev/sda2"),
    ("image-on-an-nvme-swap", inventory_yaml(3, defaults="disk: {device: nvme0n1, partitions: [{mount: /, fstype: ext4,"
                                                         " size: 5}, {mount: swap, fstype: swap, size: 5}]}")
     .replace("target: /dev/sda1", "target: /dev/nvme0n1p2"),
     "images[0].target", "/dev/nvme0n1p2 is the swap partition of node001, node002 and node003 (partition 2 of disk "
     "nvme0n1, defaults.disk.partitions[1])", "target: /dev/nvme0n1p2"),
    ("xfs-refused", inventory_yaml(3, defaults="disk: {partitions: [{mount: /, fstype: xfs, size: 5}]}"),
     "defaults.disk.partitions[0].fstype", "the installer can neither make nor mount xfs (supported: ext2, ext3, ext4, "
     "vfat, swap, biosboot): 'xfs'", "disk:"),
    ("btrfs-refused", BASE.replace("ip: 10.9.0.3}", "ip: 10.9.0.3,\n     disk: {partitions: [{mount: /, fstype: ext4, "
                                   "size: 5}, {mount: /home, fstype: btrfs, size: 5}]}}"),
     "nodes[1].disk.partitions[1].fstype", "the installer can neither make nor mount btrfs", "disk:"),
    ("lilo-on-uefi-by-defaults", inventory_yaml(3, defaults="bootloader: lilo\nfirmware: uefi"),
     "defaults.bootloader", "bootloader lilo, firmware uefi, disk label gpt (firmware uefi's default): LILO boots "
     "BIOS machines only, from an msdos disk (use bootloader grub2): 'lilo'", "bootloader: lilo"),
    ("lilo-on-a-uefi-node-with-msdos", inventory_yaml(3, defaults="bootloader: lilo").replace(
        "ip: 10.9.0.3}", "ip: 10.9.0.3, firmware: uefi,\n     disk: {label: msdos, partitions: [{mount: /, fstype: "
        "ext4, size: 5}]}}"),
     "nodes[1].firmware", "bootloader lilo, firmware uefi, disk label msdos: LILO boots BIOS machines only", "node002"),
    ("lilo-on-a-gpt-label", BASE.replace("ip: 10.9.0.3}", "ip: 10.9.0.3, bootloader: lilo,\n     disk: {label: gpt, "
                                         "partitions: [{mount: /, fstype: ext4, size: 5}]}}"),
     "nodes[1].bootloader", "bootloader lilo, disk label gpt: LILO boots only from an msdos (MBR) disk", "node002"),
    ("key-given-twice", BASE.replace("  name: srv\n", "  name: srv\n  name: srv2\n"),
     "server.name", "key given twice", "srv2"),
    ("nodes-not-a-list", BASE.split("nodes:")[0] + "nodes: n1\n", "nodes", "expected a list: 'n1'", "nodes:"),
    ("bad-transport", BASE.replace("  initrd: /srv/boot/initrd.img\n", "  initrd: /srv/boot/initrd.img\n  transport: ftp\n"),
     "boot.transport", "expected one of http, tftp, multicast: 'ftp'", "transport: ftp"),
    ("diskless-bad-path", BASE.replace("  initrd: /srv/boot/initrd.img\n",
                                       "  initrd: /srv/boot/initrd.img\n  diskless: /srv/my diskless\n"),
     "boot.diskless", "invalid path: '/srv/my diskless'", "diskless:"),
    ("node-auth-not-boolean", BASE.replace("  ip: 10.9.0.1\n", "  ip: 10.9.0.1\n  node_auth: maybe\n"),
     "server.node_auth", "expected true or false: 'maybe'", "node_auth:"),
    ("dolly-not-a-mapping", BASE + "dolly: /etc/secret\n", "dolly", "expected a mapping (key: value lines): "
     "'/etc/secret'", "dolly:"),
    ("dolly-unknown-key", BASE + "dolly:\n  secret: /etc/secret\n", "dolly.secret",
     "unknown key (known keys: secret_file, digest): 'secret'", "secret:"),
    ("dolly-unknown-digest", BASE + "dolly:\n  secret_file: /etc/secret\n  digest: md5\n", "dolly.digest",
     "expected one of sha256, blake3, none: 'md5'", "digest: md5"),
    ("dolly-secret-file-not-text", BASE + "dolly:\n  secret_file: [a, b]\n", "dolly.secret_file",
     "expected a non-empty string: ['a', 'b']", "secret_file:"),
    ("dolly-secret-file-bad-path", BASE + "dolly:\n  secret_file: /etc/my secret\n", "dolly.secret_file",
     "invalid path: '/etc/my secret'", "secret_file:"),
    ("dhcp-unknown-server", BASE + "dhcp:\n  server: dnsmasq\n", "dhcp.server", "expected one of isc, kea: 'dnsmasq'",
     "server: dnsmasq"),
    ("dhcp-unknown-key", BASE + "dhcp:\n  kea: true\n", "dhcp.kea", "unknown key (known keys: server): 'kea'", "kea:"),
    ("ipv6-ra-not-boolean", BASE.replace("  domain: test.example\n", "  domain: test.example\n  ipv6_ra: on-site\n"),
     "network.ipv6_ra", "expected true or false: 'on-site'", "ipv6_ra:"),
]


def test_boot_transport_and_ipv6_ra_defaults_and_choices(tmp_path):
    inv = load_inventory(write(tmp_path, BASE))
    assert (inv.boot.transport, inv.network.ipv6_ra) == (Transport.TFTP, False)  # RAs are the admin's choice
    text = BASE.replace("  initrd: /srv/boot/initrd.img\n", "  initrd: /srv/boot/initrd.img\n  transport: http\n")
    text = text.replace("  domain: test.example\n", "  domain: test.example\n  ipv6_ra: true\n")
    inv = load_inventory(write(tmp_path, text))
    assert (inv.boot.transport, inv.network.ipv6_ra) == (Transport.HTTP, True)
    assert load_inventory(LAB.with_name("lab-vm.yaml")).network.ipv6_ra is True


def test_boot_diskless_is_optional(tmp_path):
    assert load_inventory(write(tmp_path, BASE)).boot.diskless is None
    text = BASE.replace("  initrd: /srv/boot/initrd.img\n", "  initrd: /srv/boot/initrd.img\n  diskless: /srv/dl\n")
    assert load_inventory(write(tmp_path, text)).boot.diskless == "/srv/dl"


def test_dhcp_server_default_and_kea(tmp_path):
    assert load_inventory(write(tmp_path, BASE)).dhcp.server is DhcpServer.ISC
    assert load_inventory(write(tmp_path, BASE + "dhcp: {server: kea}\n")).dhcp.server is DhcpServer.KEA


def test_dolly_secret_file_and_node_auth_defaults_and_values(tmp_path):
    inv = load_inventory(write(tmp_path, BASE))
    assert (inv.dolly.secret_file, inv.server.node_auth) == (None, True)
    assert load_inventory(write(tmp_path, BASE + "dolly:\n")).dolly.secret_file is None
    text = BASE.replace("  ip: 10.9.0.1\n", "  ip: 10.9.0.1\n  node_auth: false\n")
    inv = load_inventory(write(tmp_path, text + "dolly:\n  secret_file: /etc/provision/ring.secret\n"))
    assert (inv.dolly.secret_file, inv.server.node_auth) == (Path("/etc/provision/ring.secret"), False)
    # relative to the inventory's directory, not the working directory; the file need not exist yet
    (tmp_path / "site").mkdir()
    inv = load_inventory(write(tmp_path / "site", BASE + "dolly: {secret_file: secrets/ring.secret}\n"))
    assert inv.dolly.secret_file == tmp_path / "site" / "secrets" / "ring.secret"
    assert not inv.dolly.secret_file.exists()


def test_dolly_digest_default_and_choices(tmp_path):
    assert load_inventory(write(tmp_path, BASE)).dolly.digest is FileDigest.SHA256  # the report as it always was
    for digest in FileDigest:
        assert load_inventory(write(tmp_path, BASE + f"dolly: {{digest: {digest}}}\n")).dolly == Dolly(None, digest)


@pytest.mark.parametrize("text, field, value, line_text", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_file_line_field_and_value(tmp_path, text, field, value, line_text):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_inventory(path)
    message = str(caught.value)
    expected_line = _line_of(text, line_text)
    hits = [line for line in message.splitlines() if f" {field}: " in line]
    assert hits, message
    assert any(f"{path}:{expected_line}: {field}: " in line and value in line for line in hits), message
    assert caught.value.exit_status == ExitStatus.BAD_INPUT


def test_bad_yaml_names_the_line(tmp_path):
    text = BASE.replace("  subnet: 10.9.0.0/24\n", "  subnet: [10.9.0.0/24\n")
    with pytest.raises(InputError, match=rf"{tmp_path}/cluster.yaml:\d+: not valid YAML"):
        load_inventory(write(tmp_path, text))


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    """A few lines whose anchors nest (9^8 values once expanded) are refused by count, not built."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefg", "bcdefgh"))
    path = write(tmp_path, BASE + "padding:\n" + "".join(f"  {line}\n" for line in bomb.splitlines()))
    with pytest.raises(InputError, match=rf"{path}:\d+: refused: aliases expand to more than 100,000 values"):
        load_inventory(path)


def test_aliases_of_a_normal_size_still_load(tmp_path):
    """Every node taking its disk from one anchor: 250 uses, well under the bound."""
    disk = "{device: sda, partitions: [{mount: /, fstype: ext4, size: 9, grow: true}, {mount: swap, fstype: swap, size: 1}]}"
    text = inventory_yaml(250).replace("  - {name: ", "  - {disk: *disk, name: ").replace(
        "defaults:\n", f"defaults:\n  disk: &disk {disk}\n")
    inv = load_inventory(write(tmp_path, text))
    assert len(inv.nodes) == 250 and inv.nodes[-1].disk.partitions[1].fstype == "swap"


def test_an_alias_to_itself_is_refused(tmp_path):
    path = write(tmp_path, BASE.replace("defaults:\n", "defaults:\n  disk: &disk {partitions: [*disk]}\n"))
    with pytest.raises(InputError, match=rf"{path}:\d+: refused: an alias refers to the value that holds it"):
        load_inventory(path)


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "cluster.yaml"
    with open(path, "wb") as f:
        f.truncate(9 << 20)  # sparse: nothing to read anyway
    with pytest.raises(InputError, match=rf"{path}: 9,437,184 bytes: an inventory is at most 8 MiB"):
        load_inventory(path)


def test_plaintext_password_is_refused_and_never_echoed(tmp_path):
    text = BASE.replace(HASH, "hunter2secret")
    with pytest.raises(InputError) as caught:
        load_inventory(write(tmp_path, text))
    message = str(caught.value)
    assert f":{_line_of(text, 'hunter2secret')}: defaults.root_password_hash: must be a crypt(3) hash" in message
    assert "hunter2secret" not in message and "<hidden, 13 characters>" in message


@pytest.mark.parametrize("good", [
    "$1$salt$" + "c" * 22, "$5$rounds=5000$salt$" + "d" * 43, "$y$j9T$salt12345678$" + "e" * 43,
    "$2b$12$" + "f" * 53,
])
def test_crypt_hash_formats_accepted(tmp_path, good):
    assert load_inventory(write(tmp_path, BASE.replace(HASH, good))).nodes[0].root_password_hash == good


def test_every_problem_is_reported_at_once(tmp_path):
    text = (BASE.replace('"02:00:00:00:00:02"', '"nonsense"').replace("ip: 10.9.0.4}", "ip: 10.7.0.4}")
            .replace("name: node001", "name: bad_name") + "colour: blue\n")
    with pytest.raises(InputError) as caught:
        load_inventory(write(tmp_path, text))
    message = str(caught.value)
    assert "4 problems" in message
    for field in ("colour", "nodes[0].name", "nodes[1].mac", "nodes[2].ip"):
        assert f" {field}: " in message


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="cannot read the inventory"):
        load_inventory(tmp_path / "nope.yaml")


def test_unknown_node_name_is_bad_input():
    inv = load_inventory(EXAMPLE)
    with pytest.raises(InputError, match="no node named 'n999'"):
        inv.node("n999")


def test_resolve_inventory_path_order(tmp_path):
    record = tmp_path / "last-install.json"
    record.write_text(json.dumps({"inventory": "/recorded.yaml"}))
    env = {"PROVISION_STATE_DIR": str(tmp_path)}
    assert str(resolve_inventory_path("/arg.yaml", {**env, "PROVISION_INVENTORY": "/env.yaml"})) == "/arg.yaml"
    assert str(resolve_inventory_path(None, {**env, "PROVISION_INVENTORY": "/env.yaml"})) == "/env.yaml"
    assert str(resolve_inventory_path(None, env)) == "/recorded.yaml"
    record.write_text("{not json")
    with pytest.raises(InputError, match="unreadable last-install record"):
        resolve_inventory_path(None, env)
    record.unlink()
    with pytest.raises(InputError, match="no inventory given"):
        resolve_inventory_path(None, env)


def test_cli_bad_inventory_exits_bad_input_and_leaves_out_dir_alone(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dhcpd.conf").write_text("old config\n")
    before = snapshot(out)
    path = write(tmp_path, BASE.replace("ip: 10.9.0.3}", "ip: 10.9.0.300}"))
    status = main(["render", "--inventory", str(path), "--out", str(out)], env={})
    assert status == ExitStatus.BAD_INPUT
    assert "nodes[1].ip: malformed IPv4 address: '10.9.0.300'" in capsys.readouterr().err
    assert snapshot(out) == before
