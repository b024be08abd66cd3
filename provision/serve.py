"""`provision serve`: the install server's services without an install, for nodes that boot from it every
time (diskless nodes) or to re-serve a cluster: render with the recorded boot modes (checked, as a flip),
boot files into the TFTP root, the DHCP server, TFTP and HTTP, until SIGINT or SIGTERM (or `seconds`).

HTTP serves the boot files (with Range requests), kickstarts, boot queries, node reports, diskless nodes'
identities and the host keys of the nodes in diskless boot, each bound to its node's address (server.node_auth).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from provision.cluster import ClusterFiles
from provision.diskless_stage import diskless_nodes
from provision.flip import apply_modes, current_modes
from provision.host_keys import HostKeyKeeper, HostKeyStore, KeyedNode
from provision.model import BOOT_TFTP_DIR, Firmware, Inventory
from provision.services.http import HttpServer, NodeAuth
from provision.services.tftp import TftpServer, install_boot_files


def serve(inv: Inventory, env: Mapping[str, str] = os.environ, site_templates: Path | None = None,
          show: Callable[[str], None] = print, tftp_port: int = 69, seconds: float | None = None) -> None:
    """Serve `inv`'s cluster until SIGINT/SIGTERM (or for `seconds`); the DHCP server keeps running after."""
    files = ClusterFiles.of(inv, env)
    store = files.store()
    store.ensure(inv.node_names)
    modes = current_modes(inv, files)
    apply_modes(inv, files, modes, site_templates or files.recorded_templates())
    install_boot_files(files.tftp_root, inv.boot, uefi=any(n.firmware is Firmware.UEFI for n in inv.nodes))
    dhcp = files.dhcp()
    if not dhcp.running():
        dhcp.start()
    diskless = [inv.node(name) for name in diskless_nodes(modes)]
    keeper = HostKeyKeeper(HostKeyStore(files.host_keys), files.known_hosts,
                           [KeyedNode(n.name, str(n.ip), f"root@{inv.fqdn(n.name)}") for n in diskless],
                           on_error=lambda name, error: show(f"WARNING: {error}: {name} makes its own"))
    tftp = TftpServer(files.tftp_root, host=str(inv.server.ip), port=tftp_port)
    multicast = files.multicast_tftp(inv, bool(diskless))
    http = HttpServer(files.kickstarts, nodes=inv.node_names, on_report=store.report,
                      host=str(inv.server.ip), port=inv.server.http_port,
                      states=lambda: [r.to_json() for r in store.load().values()],
                      boot_of=lambda name: store.load()[name].boot, boot_dir=files.tftp_root / BOOT_TFTP_DIR,
                      host_key=keeper.key_file,
                      node_auth=NodeAuth({n.name: str(n.ip) for n in inv.nodes}, enforce=inv.server.node_auth))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    keeper.start(urgent=True).wait()  # made (or found) by the pool, trusted in known_hosts before any node asks
    keeper.close()
    tftp.start()
    try:
        if multicast is not None:
            multicast.start()
        http.start()
        try:
            tftps = "TFTP (and multicast TFTP)" if multicast else "TFTP"
            show(f"{dhcp.NAME} (pid {dhcp.pid()}), {tftps} and HTTP serving {inv.cluster} on {inv.server.ip}; "
                 f"{len(diskless)} node(s) in diskless boot; SIGINT or SIGTERM ends")
            stop.wait(seconds)
        finally:
            http.stop()
    finally:
        if multicast is not None:
            multicast.stop()
        tftp.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    show(f"stopped serving ({dhcp.NAME} keeps running: provision dhcp stop)")
