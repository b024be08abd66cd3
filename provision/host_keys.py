"""Each node's SSH host keys, made and kept by the server: <cluster dir>/host-keys/<node>/ssh_host_<type>_key
and .pub for rsa, ecdsa and ed25519 (ssh-keygen, as OpenSSH's own `ssh-keygen -A` makes them).

A reinstalled node keeps its identity (users' known_hosts entries stay valid), `provision verify` knows every
node's keys before it connects (a clone that presents another key is refused), and no node spends its install
making an RSA key (0.3-2.6 s of CPU on this machine, 8-49 s in a TCG machine). The node fetches them over HTTP
at the end of its %post, from its own address only (provision.services.http).
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ProvisionError
from provision.ssh import KnownHosts

log = logging.getLogger("provision.host_keys")

KEY_TYPES = ("rsa", "ecdsa", "ed25519")
KEY_FILES = tuple(f"ssh_host_{kind}_key{suffix}" for kind in KEY_TYPES for suffix in ("", ".pub"))


class HostKeyStore:
    """The key directories of one cluster's nodes; a node's set is complete or absent (made in a work
    directory beside it and renamed into place)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def node_dir(self, name: str) -> Path:
        return self.directory / name

    def has(self, name: str) -> bool:
        return all((self.node_dir(name) / f).is_file() for f in KEY_FILES)

    def ensure(self, name: str, comment: str) -> list[str]:
        """The node's public key lines ("ssh-ed25519 AAAA... comment"), its keys made first if missing."""
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if not self.has(name):
                self._make(name, comment)
            return [(self.node_dir(name) / f"ssh_host_{kind}_key.pub").read_text(encoding="ascii").strip()
                    for kind in KEY_TYPES]

    def read(self, name: str, filename: str) -> bytes:
        """One of the node's KEY_FILES (KeyError for any other name)."""
        if filename not in KEY_FILES:
            raise KeyError(filename)
        return (self.node_dir(name) / filename).read_bytes()

    def _make(self, name: str, comment: str) -> None:
        keygen = shutil.which("ssh-keygen")
        if keygen is None:
            raise ProvisionError("ssh-keygen not found (Debian package openssh-client): the nodes make their "
                                 "own host keys")
        self.directory.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.directory))  # mode 0700
        try:
            for kind in KEY_TYPES:  # niced: the install's TFTP and HTTP serving come first
                proc = subprocess.run(["nice", "-n", "10", keygen, "-q", "-t", kind, "-N", "", "-C", comment,
                                       "-f", str(work / f"ssh_host_{kind}_key")],
                                      stdin=subprocess.DEVNULL, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise ProvisionError(f"ssh-keygen -t {kind} for {name} failed: "
                                         f"{proc.stderr.strip() or proc.returncode}")
            final = self.node_dir(name)
            if final.exists():  # an incomplete set: a file was removed by hand
                shutil.rmtree(final)
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        log.info("host keys: made %s's (%s)", name, ", ".join(KEY_TYPES))


@dataclass(frozen=True)
class KeyedNode:
    name: str
    ip: str
    comment: str  # root@<fqdn>, as ssh-keygen -A on the node would write it


class HostKeyKeeper:
    """One install's host keys: the pending nodes' keys made in the background (or on demand, when a node
    asks first) and trusted for the node's IP, written into known_hosts when the install ends (`close()`).
    A node whose keys cannot be made gets none from the server and makes its own (its known_hosts entry
    stays forgotten; `verify` learns it)."""

    def __init__(self, store: HostKeyStore, known_hosts: Path, nodes: Sequence[KeyedNode]):
        self.store, self.known_hosts = store, known_hosts
        self.nodes = {n.name: n for n in nodes}
        self._trusted: set[str] = set()
        self._trust_lock = threading.Lock()
        self._known: KnownHosts | None = None  # loaded at the first trust, after the install forgot its nodes
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()

    def start(self) -> HostKeyKeeper:
        """Make the missing keys in inventory order, one niced ssh-keygen per core."""
        if shutil.which("ssh-keygen") is None:
            log.warning("host keys: ssh-keygen not found (Debian package openssh-client): the nodes make their own")
            return self
        todo: queue.SimpleQueue[str] = queue.SimpleQueue()
        for name in self.nodes:
            todo.put(name)
        self._threads = [threading.Thread(target=self._make_from, args=(todo,), name=f"host-keys-{i}", daemon=True)
                         for i in range(min(os.cpu_count() or 1, len(self.nodes)))]
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        """Stop making keys after the nodes at hand, and write the trusted keys into known_hosts."""
        self._closing.set()
        for thread in self._threads:
            thread.join()
        with self._trust_lock:
            if self._known is not None:
                self._known.save()

    def key_file(self, name: str, filename: str) -> bytes:
        """One of `name`'s KEY_FILES, its keys made and trusted first (KeyError for another file name,
        ProvisionError if the keys cannot be made)."""
        if filename not in KEY_FILES:
            raise KeyError(filename)
        self._ensure(name)
        return self.store.read(name, filename)

    def _ensure(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            raise ProvisionError(f"{name} is not being installed: no host keys for it")
        public = self.store.ensure(name, node.comment)
        with self._trust_lock:
            if name not in self._trusted:
                self._known = self._known or KnownHosts(self.known_hosts)
                self._known.trust(node.ip, public)
                self._trusted.add(name)

    def _make_from(self, todo: queue.SimpleQueue[str]) -> None:
        while not self._closing.is_set():
            try:
                name = todo.get_nowait()
            except queue.Empty:
                return
            try:
                self._ensure(name)
            except (ProvisionError, OSError) as exc:
                log.warning("host keys: %s", exc)
