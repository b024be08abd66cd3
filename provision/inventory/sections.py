"""The cluster-wide sections of the inventory: server, network, boot, images, kickstart, dolly, dhcp, ring."""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from provision.fields import Fields
from provision.inventory.schema import default, keys, required
from provision.model import (Boot, Dhcp, DhcpServer, Dolly, FileDigest, Image, KickstartSettings, Network, Ring, Server,
                             Transport)

WORD = re.compile(r"^[A-Za-z0-9_./+-]+$")
MOUNT = re.compile(r"^/[A-Za-z0-9_./-]*$")
MAX_RINGS = 1024  # dollyS processes at once on the install server
MAX_RING_SECONDS = 86400.0  # ring.wait and ring.timeout (dollyS takes up to a week; a day is plenty)


class Sections:
    """Reads each section into its model object, or None after recording its problems in `fields`."""

    def __init__(self, fields: Fields, path: Path):
        self.f = fields
        self.path = path  # the inventory file (dolly.secret_file is relative to its directory)

    def server(self, data: Any) -> Server | None:
        p = ("server",)
        m = self.f.mapping(p, data, keys(Server), required(Server))
        if m is None:
            return None
        name = self.f.checked(m, p, "name", self.f.hostname)
        ip = self.f.checked(m, p, "ip", self.f.ipv4)
        http_port = self.f.port(p + ("http_port",), m.get("http_port", default(Server, "http_port")))
        dolly_port = self.f.port(p + ("dolly_port",), m.get("dolly_port", default(Server, "dolly_port")))
        node_auth = self.f.boolean(p + ("node_auth",), m.get("node_auth", default(Server, "node_auth")))
        if None in (name, ip, http_port, dolly_port, node_auth):
            return None
        return Server(name, ip, http_port, dolly_port, node_auth)

    def network(self, data: Any) -> Network | None:
        p = ("network",)
        m = self.f.mapping(p, data, keys(Network), required(Network))
        if m is None:
            return None
        subnet = self.f.checked(m, p, "subnet", self.f.subnet)
        gateway = self.f.checked(m, p, "gateway", self.f.ipv4)
        dns = self.dns(p + ("dns",), m.get("dns"))
        domain = self.f.checked(m, p, "domain", self.f.hostname)
        ipv6_ra = self.f.boolean(p + ("ipv6_ra",), m.get("ipv6_ra", default(Network, "ipv6_ra")))
        if subnet is not None and gateway is not None and gateway not in subnet:
            self.f.problem(p + ("gateway",), f"gateway is outside the subnet {subnet}", str(gateway))
        if subnet is None or dns is None or ipv6_ra is None:
            return None
        return Network(subnet, gateway, dns, domain, ipv6_ra)

    def dns(self, path: tuple, value: Any) -> tuple[IPv4Address, ...] | None:
        """One address or a list of them."""
        if value is None:
            return ()
        if isinstance(value, str):
            found = self.f.ipv4(path, value)
            return None if found is None else (found,)
        items = self.f.sequence(path, value)
        if items is None:
            return None
        addresses = tuple(self.f.ipv4(path + (i,), item) for i, item in enumerate(items))
        return None if None in addresses else addresses

    def boot(self, data: Any) -> Boot | None:
        p = ("boot",)
        m = self.f.mapping(p, data, keys(Boot), required(Boot))
        if m is None:
            return None
        kernel = self.f.checked(m, p, "kernel", self.f.text, WORD, "path")
        initrd = self.f.checked(m, p, "initrd", self.f.text, WORD, "path")
        append = self.f.kernel_args(p + ("append",), m.get("append", default(Boot, "append")))
        transport = self.f.choice(p + ("transport",), m.get("transport", default(Boot, "transport")), Transport)
        diskless = self.f.checked(m, p, "diskless", self.f.text, WORD, "path")
        if "diskless" in m and diskless is None:
            return None
        if kernel and initrd and Path(kernel).name == Path(initrd).name:
            self.f.problem(p + ("initrd",), "kernel and initrd need different file names", initrd)
            return None
        if None in (kernel, initrd, append, transport):
            return None
        return Boot(kernel, initrd, append, transport, diskless)

    def images(self, data: Any) -> tuple[Image, ...] | None:
        items = self.f.nonempty_sequence(("images",), data, "image")
        if items is None:
            return None
        images = []
        for i, item in enumerate(items):
            p = ("images", i)
            m = self.f.mapping(p, item, keys(Image), required(Image))
            if m is None:
                continue
            source = self.f.checked(m, p, "source", self.f.text, WORD, "path")
            target = self.f.checked(m, p, "target", self.f.text, MOUNT, "absolute path")
            cook = self.f.boolean(p + ("cook",), m.get("cook", default(Image, "cook")))
            if None not in (source, target, cook):
                images.append(Image(source, target, cook))
        return tuple(images) if len(images) == len(items) else None

    def kickstart(self, data: Any) -> KickstartSettings | None:
        p = ("kickstart",)
        m = self.f.mapping(p, data, keys(KickstartSettings))
        if m is None:
            return None
        values = [self.f.text(p + (k,), m.get(k, default(KickstartSettings, k)), WORD, k)
                  for k in keys(KickstartSettings)]
        return None if None in values else KickstartSettings(*values)

    def dhcp(self, data: Any) -> Dhcp | None:
        p = ("dhcp",)
        m = self.f.mapping(p, data, keys(Dhcp))
        if m is None:
            return None
        server = self.f.choice(p + ("server",), m.get("server", default(Dhcp, "server")), DhcpServer)
        return None if server is None else Dhcp(server)

    def dolly(self, data: Any) -> Dolly | None:
        """The ring cloner's settings; only the path's form is checked (the secret file may be made later)."""
        p = ("dolly",)
        m = self.f.mapping(p, data, keys(Dolly))
        if m is None:
            return None
        digest = self.f.choice(p + ("digest",), m.get("digest", default(Dolly, "digest")), FileDigest)
        if m.get("secret_file") is None:
            return None if digest is None else Dolly(None, digest)
        text = self.f.text(p + ("secret_file",), m["secret_file"], WORD, "path")
        return None if None in (text, digest) else Dolly((self.path.parent / text).absolute(), digest)

    def ring(self, data: Any, server: Server | None) -> Ring | None:
        """How many rings clone at once (ring i's tail listens on the server's dolly_port + i, which must be
        a port and not the HTTP port), and their dollyS --wait and --timeout."""
        p = ("ring",)
        m = self.f.mapping(p, data, keys(Ring))
        if m is None:
            return None
        count = self.f.integer(p + ("count",), m.get("count", default(Ring, "count")), 1, MAX_RINGS)
        wait, timeout = (self.f.seconds(p + (k,), m.get(k, default(Ring, k)), MAX_RING_SECONDS)
                         for k in ("wait", "timeout"))
        if None in (count, wait, timeout):
            return None
        if server is not None:
            last = server.dolly_port + count - 1
            if last > 65535:
                self.f.problem(p + ("count",), f"rings 1-{count} close back to the server's ports "
                                               f"{server.dolly_port}-{last}: past 65535", count)
                return None
            if server.dolly_port < server.http_port <= last:
                self.f.problem(p + ("count",), f"rings 1-{count} close back to the server's ports "
                                               f"{server.dolly_port}-{last}, which hold its http_port "
                                               f"{server.http_port}", count)
                return None
        return Ring(count, wait, timeout)
