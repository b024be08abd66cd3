"""Where one cluster's files live under the state directory, and what the last install recorded."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from provision.inventory import LAST_INSTALL_FILE, state_dir
from provision.model import DhcpServer, Inventory, Transport
from provision.render import DHCPD_CONF, KEA_CONF, multicast_payload
from provision.services.dhcpd import DhcpdProcess
from provision.services.kea import KeaProcess
from provision.services.multicast_tftp import MulticastTftpServer
from provision.state import StateStore, write_json_atomic


@dataclass(frozen=True)
class ClusterFiles:
    """<state dir>/clusters/<cluster>/: rendered/ (dhcpd.conf or kea-dhcp4.conf, tftpboot/, kickstart/,
    dolly.conf), dhcpd/ or kea/ (the live config, leases, pid, log, Kea's control socket), dolly/ (the ring
    config, secret and report of a run), host-keys/, known_hosts, install.json, atftpd.log (multicast TFTP)."""

    state: Path
    cluster: str
    dhcp_server: DhcpServer = DhcpServer.ISC

    @classmethod
    def of(cls, inv: Inventory, env: Mapping[str, str] = os.environ) -> ClusterFiles:
        return cls(state_dir(env), inv.cluster, inv.dhcp.server)

    @property
    def root(self) -> Path:
        return self.state / "clusters" / self.cluster

    @property
    def rendered(self) -> Path:
        return self.root / "rendered"

    @property
    def tftp_root(self) -> Path:
        return self.rendered / "tftpboot"

    @property
    def kickstarts(self) -> Path:
        return self.rendered / "kickstart"

    @property
    def dolly(self) -> Path:
        return self.root / "dolly"

    @property
    def ring_secret(self) -> Path:
        """The ring secret of the current install (dollyS --secret-file; mode 0600, made anew each run)."""
        return self.dolly / "ring.secret"

    @property
    def known_hosts(self) -> Path:
        """SSH host keys of the nodes: those the server gave them (trusted at install), else learnt by
        `provision run` / `verify`."""
        return self.root / "known_hosts"

    @property
    def host_keys(self) -> Path:
        """The nodes' SSH host keys, made by the server and kept across reinstalls (provision.host_keys)."""
        return self.root / "host-keys"

    @property
    def install_record(self) -> Path:
        return self.root / "install.json"

    def dhcp(self) -> DhcpdProcess | KeaProcess:
        """The cluster's DHCP server: our own dhcpd or kea-dhcp4, with its files in dhcpd/ or kea/."""
        if self.dhcp_server is DhcpServer.KEA:
            return KeaProcess(self.root / "kea" / KEA_CONF, self.root / "kea")
        return DhcpdProcess(self.root / "dhcpd" / DHCPD_CONF, self.root / "dhcpd")

    def multicast_tftp(self, inv: Inventory, with_diskless: bool) -> MulticastTftpServer | None:
        """atftpd for `boot.transport: multicast` (None for the other transports), serving what pxelinux's
        configs name as tftm:// URLs."""
        if inv.boot.transport is not Transport.MULTICAST:
            return None
        return MulticastTftpServer(self.tftp_root, multicast_payload(inv, with_diskless), str(inv.server.ip),
                                   self.root / "atftpd.log")

    @property
    def dhcp_rendered(self) -> Path:
        """The rendered config of the cluster's DHCP server (it is made live by dhcp().install)."""
        return self.rendered / (KEA_CONF if self.dhcp_server is DhcpServer.KEA else DHCPD_CONF)

    def store(self) -> StateStore:
        return StateStore(self.root / "nodes.json")

    def record_install(self, inv: Inventory, site_templates: Path | None) -> None:
        """Remember the inventory (for commands run without --inventory) and the site templates."""
        record = {"inventory": str(Path(inv.path).resolve()),
                  "templates": str(site_templates.resolve()) if site_templates else None}
        write_json_atomic(self.install_record, record)
        write_json_atomic(self.state / LAST_INSTALL_FILE, record)

    def recorded_templates(self) -> Path | None:
        """The site template directory the last install of this cluster used, if any."""
        try:
            templates = json.loads(self.install_record.read_text(encoding="utf-8")).get("templates")
        except (OSError, ValueError, AttributeError):
            return None
        return Path(templates) if templates else None
