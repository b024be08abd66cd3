"""Run one command on many nodes at once over SSH (paramiko), with a clear result per node."""

from __future__ import annotations

import enum
import os
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import paramiko


class HostKeyPolicy(enum.StrEnum):
    """What to do with a host key that is not in the known-hosts file."""

    REJECT = "reject"          # only known hosts (strict)
    ACCEPT_NEW = "accept-new"  # learn unknown keys and save them; a changed key is still refused
    IGNORE = "ignore"          # trust any key, remember none (freshly installed nodes, labs)


@dataclass(frozen=True)
class SshSettings:
    user: str = "root"
    port: int = 22
    key_files: tuple[Path, ...] = ()
    known_hosts: Path | None = None
    policy: HostKeyPolicy = HostKeyPolicy.ACCEPT_NEW
    connect_timeout: float = 10.0
    command_timeout: float = 300.0
    parallel: int = 32


@dataclass(frozen=True)
class Target:
    name: str
    host: str


@dataclass(frozen=True)
class CommandResult:
    name: str
    host: str
    exit_status: int | None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_status == 0


@dataclass
class KnownHosts:
    """A known-hosts file loaded once and shared (all connections of one run, one install's trusted keys):
    one lock, saved atomically (after each learnt key; trusted keys by `save()`)."""

    path: Path | None
    keys: paramiko.HostKeys = field(default_factory=paramiko.HostKeys)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.path is not None and self.path.exists():
            self.keys.load(str(self.path))

    def learn(self, lookup_name: str, key: paramiko.PKey) -> None:
        with self.lock:
            self.keys.add(lookup_name, key.get_name(), key)
            if self.path is not None:
                _save(self.keys, self.path)

    def trust(self, host: str, public_keys: Iterable[str]) -> None:
        """Make `public_keys` ("ssh-ed25519 AAAA... comment" lines) the known keys of `host`, replacing any
        others it had (the keys the server gave a node it installs); in memory until `save()` (paramiko
        writes ~6,000 keys a second: a save per node of a big cluster would cost minutes)."""
        lines = list(public_keys)
        entries = [paramiko.hostkeys.HostKeyEntry.from_line(f"{host} {line}") for line in lines]
        bad = [line for line, entry in zip(lines, entries) if entry is None or entry.key is None]
        if bad:
            raise ValueError(f"not an SSH public key line: {bad[0]!r}")
        with self.lock:
            while self.keys.lookup(host) is not None:
                del self.keys[host]
            for entry in entries:
                self.keys.add(host, entry.key.get_name(), entry.key)

    def save(self) -> None:
        with self.lock:
            if self.path is not None:
                _save(self.keys, self.path)


def _save(keys: paramiko.HostKeys, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    keys.save(str(tmp))
    os.replace(tmp, path)


def forget_hosts(known_hosts: Path, hosts: Iterable[str]) -> list[str]:
    """Drop the known keys of `hosts` (a reinstalled node has new host keys); returns the hosts dropped."""
    if not known_hosts.exists():
        return []
    keys = paramiko.HostKeys(str(known_hosts))
    dropped = []
    for host in hosts:
        while keys.lookup(host) is not None:
            del keys[host]
            if host not in dropped:
                dropped.append(host)
    if dropped:
        _save(keys, known_hosts)
    return dropped


class _Policy(paramiko.MissingHostKeyPolicy):
    def __init__(self, policy: HostKeyPolicy, known: KnownHosts):
        self.policy = policy
        self.known = known

    def missing_host_key(self, client, hostname, key):
        if self.policy is HostKeyPolicy.REJECT:
            raise paramiko.SSHException(
                f"host key of {hostname} is not in "
                f"{self.known.path or 'the known-hosts file'} (policy: reject)"
            )
        if self.policy is HostKeyPolicy.ACCEPT_NEW:
            self.known.learn(hostname, key)


def run_command(targets: Sequence[Target], command: str, settings: SshSettings) -> list[CommandResult]:
    """Run `command` on every target in parallel; results come back in the order of `targets`."""
    known = KnownHosts(settings.known_hosts)
    workers = max(1, min(settings.parallel, len(targets)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ssh") as pool:
        return list(pool.map(lambda t: _run_one(t, command, settings, known), targets))


def _run_one(target: Target, command: str, settings: SshSettings, known: KnownHosts) -> CommandResult:
    started = time.monotonic()
    client = paramiko.SSHClient()
    with known.lock:
        for hostname, keys in known.keys.items():
            for keytype, key in keys.items():
                client.get_host_keys().add(hostname, keytype, key)
    client.set_missing_host_key_policy(_Policy(settings.policy, known))

    def failed(message: str) -> CommandResult:
        return CommandResult(target.name, target.host, None, error=message,
                             seconds=time.monotonic() - started)

    try:
        client.connect(
            target.host,
            port=settings.port,
            username=settings.user,
            key_filename=[str(p) for p in settings.key_files] or None,
            look_for_keys=not settings.key_files,
            allow_agent=not settings.key_files and "SSH_AUTH_SOCK" in os.environ,
            timeout=settings.connect_timeout,
            banner_timeout=settings.connect_timeout,
            auth_timeout=settings.connect_timeout,
        )
        _, stdout, stderr = client.exec_command(command, timeout=settings.command_timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        status = stdout.channel.recv_exit_status()
        return CommandResult(target.name, target.host, status, out, err,
                             seconds=time.monotonic() - started)
    except paramiko.BadHostKeyException as exc:
        return failed(f"host key changed for {target.host} (expected {exc.expected_key.get_name()} "
                      f"key from known hosts): refusing to connect")
    except paramiko.AuthenticationException as exc:
        return failed(f"authentication failed as {settings.user}: {exc}")
    except (paramiko.SSHException, socket.timeout, TimeoutError) as exc:
        return failed(f"ssh: {exc or type(exc).__name__}")
    except OSError as exc:
        return failed(f"cannot connect to {target.host}:{settings.port}: {exc.strerror or exc}")
    finally:
        client.close()
