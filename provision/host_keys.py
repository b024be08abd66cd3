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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provision.errors import ProvisionError
from provision.ssh import KnownHosts

log = logging.getLogger("provision.host_keys")

KEY_TYPES = ("rsa", "ecdsa", "ed25519")
KEY_FILES = tuple(f"ssh_host_{kind}_key{suffix}" for kind in KEY_TYPES for suffix in ("", ".pub"))
BACKGROUND_NICE = 10  # the keys made ahead of need


class HostKeyStore:
    """The key directories of one cluster's nodes; a node's set is complete or absent (made in a work
    directory beside it and renamed into place)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._urgent: set[str] = set()  # nodes that asked while their keys were missing
        self._running: dict[str, subprocess.Popen] = {}  # the ssh-keygen making a node's keys now

    def node_dir(self, name: str) -> Path:
        return self.directory / name

    def has(self, name: str) -> bool:
        return all((self.node_dir(name) / f).is_file() for f in KEY_FILES)

    def ensure(self, name: str, comment: str, urgent: bool = False) -> list[str]:
        """The node's public key lines ("ssh-ed25519 AAAA... comment"), its keys made first if missing.
        `urgent` (a node is waiting for them): made at normal priority, and a niced ssh-keygen already making
        them for the background is raised to it."""
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
            if urgent:
                self._urgent.add(name)
                if (running := self._running.get(name)) is not None and running.returncode is None:  # not reaped
                    _set_nice(running.pid, 0)
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
            for kind in KEY_TYPES:
                with self._guard:  # niced unless a node waits: the install's serving comes first
                    niced = [] if name in self._urgent else ["nice", "-n", str(BACKGROUND_NICE)]
                    proc = subprocess.Popen([*niced, keygen, "-q", "-t", kind, "-N", "", "-C", comment,
                                             "-f", str(work / f"ssh_host_{kind}_key")],
                                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)
                    self._running[name] = proc
                try:
                    _, stderr = proc.communicate()
                finally:
                    with self._guard:
                        self._running.pop(name, None)
                if proc.returncode != 0:
                    raise ProvisionError(f"ssh-keygen -t {kind} for {name} failed: "
                                         f"{stderr.strip() or proc.returncode}")
            final = self.node_dir(name)
            if final.exists():  # an incomplete set: a file was removed by hand
                shutil.rmtree(final)
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        log.info("host keys: made %s's (%s)", name, ", ".join(KEY_TYPES))


def _set_nice(pid: int, nice: int) -> None:
    """Best effort: the process may have ended, and raising a priority needs root (CAP_SYS_NICE)."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError:
        pass


@dataclass(frozen=True)
class KeyedNode:
    name: str
    ip: str
    comment: str  # root@<fqdn>, as ssh-keygen -A on the node would write it


class HostKeyKeeper:
    """One install's host keys: the pending nodes' missing keys made ahead of need, from `start()` on, by a
    pool of one niced ssh-keygen per core (so a node that asks later finds them made), or on demand at
    normal priority when a node asks first; each trusted for the node's IP and written into known_hosts when
    the install ends (`close()`). A node whose keys cannot be made is reported to `on_error` (node, message
    naming it and ssh-keygen's error), gets none from the server and makes its own (its known_hosts entry
    stays forgotten; `verify` learns it)."""

    def __init__(self, store: HostKeyStore, known_hosts: Path, nodes: Sequence[KeyedNode],
                 on_error: Callable[[str, str], None] | None = None):
        self.store, self.known_hosts = store, known_hosts
        self.nodes = {n.name: n for n in nodes}
        self.on_error = on_error or (lambda name, message: log.warning("host keys: %s", message))
        self._trusted: set[str] = set()
        self._trust_lock = threading.Lock()
        self._known: KnownHosts | None = None  # loaded at the first trust, after the install forgot its nodes
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._started, self._working = 0.0, 0  # when start() was called, the pool's workers still at work

    def start(self, urgent: bool = False) -> HostKeyKeeper:
        """Make the missing keys in inventory order, a pool of min(cores, nodes) niced ssh-keygen at a time
        (`urgent`: not niced, for a caller that waits for them)."""
        if shutil.which("ssh-keygen") is None:
            log.warning("host keys: ssh-keygen not found (Debian package openssh-client): the nodes make their own")
            return self
        todo: queue.SimpleQueue[str] = queue.SimpleQueue()
        for name in self.nodes:
            todo.put(name)
        workers = min(os.cpu_count() or 1, len(self.nodes))
        log.info("host keys: %d of %d node(s) to make, %d ssh-keygen at a time",
                 sum(not self.store.has(name) for name in self.nodes), len(self.nodes), workers)
        self._started, self._working = time.monotonic(), workers
        self._threads = [threading.Thread(target=self._make_from, args=(todo, urgent), name=f"host-keys-{i}",
                                          daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()
        return self

    def wait(self) -> None:
        """Until the pool has gone through every node (made, found or failed)."""
        for thread in self._threads:
            thread.join()

    def close(self) -> None:
        """Stop making keys after the nodes at hand, and write the trusted keys into known_hosts."""
        self._closing.set()
        self.wait()
        with self._trust_lock:
            if self._known is not None:
                self._known.save()

    def key_file(self, name: str, filename: str) -> bytes:
        """One of `name`'s KEY_FILES for the node asking, its keys made (urgently) and trusted first
        (KeyError for another file name, ProvisionError if the keys cannot be made)."""
        if filename not in KEY_FILES:
            raise KeyError(filename)
        self._ensure(name, urgent=True)
        return self.store.read(name, filename)

    def _ensure(self, name: str, urgent: bool) -> None:
        node = self.nodes.get(name)
        if node is None:
            raise ProvisionError(f"{name} is not being installed: no host keys for it")
        public = self.store.ensure(name, node.comment, urgent)
        with self._trust_lock:
            if name not in self._trusted:
                self._known = self._known or KnownHosts(self.known_hosts)
                self._known.trust(node.ip, public)
                self._trusted.add(name)

    def _make_from(self, todo: queue.SimpleQueue[str], urgent: bool) -> None:
        """One worker of the pool: the next node's keys until none is left (or the install closes)."""
        while not self._closing.is_set():
            try:
                name = todo.get_nowait()
            except queue.Empty:
                break
            try:
                self._ensure(name, urgent)
            except ProvisionError as exc:
                self.on_error(name, str(exc))
            except OSError as exc:
                self.on_error(name, f"host keys of {name}: {exc}")
        with self._trust_lock:
            self._working -= 1
            if self._working == 0 and not self._closing.is_set():
                log.info("host keys: the pool went through all %d node(s) in %.1f s", len(self.nodes),
                         time.monotonic() - self._started)
