"""Where a diskless node's files live on the install server, and the kernel line that names them (pure).

A node in boot mode `diskless` boots the golden image's own kernel with the diskless initramfs; its /init
fetches the root file system (a squashfs) and the sha256 the server publishes for it, the node's identity,
and switch_roots into the root with a tmpfs overlay (docs/boot.md#diskless-boot). The files sit in the TFTP
root under boot/diskless/, which the HTTP server also serves as /boot/diskless/ (with Range requests).
"""

from __future__ import annotations

from provision.model import BOOT_TFTP_DIR, Inventory, Node

DISKLESS_DIR = f"{BOOT_TFTP_DIR}/diskless"   # inside the TFTP root (and under the HTTP server's /boot/)
KERNEL = f"{DISKLESS_DIR}/vmlinuz"           # the golden image's kernel
INITRD = f"{DISKLESS_DIR}/initrd.img"        # the diskless initramfs (provision images --diskless)
ROOT = f"{DISKLESS_DIR}/root.squashfs"       # the golden root, read-only
ROOT_SHA256 = f"{ROOT}.sha256"               # "<hex digest>  root.squashfs", as sha256sum writes it


def root_url(inv: Inventory) -> str:
    return f"{inv.server.url}/{ROOT}"


def identity_url(inv: Inventory, node: Node) -> str:
    """Where the node's initramfs asks for its identity (host name, address, SSH keys): node-bound."""
    return f"{inv.server.url}/api/nodes/{node.name}/identity"


def kernel_args(inv: Inventory, node: Node) -> str:
    """The diskless kernel line: provision.root=URL (its sha256 at URL.sha256), provision.identity=URL, the
    golden image's interface names (eth0, as its /etc/network/interfaces says) and the inventory's extras."""
    return " ".join(a for a in (f"provision.root={root_url(inv)}", f"provision.identity={identity_url(inv, node)}",
                                "net.ifnames=0", inv.boot.append, node.append) if a)
