"""TFTP: serve one directory read-only with tftpy, and install the PXE boot files into it.

tftpy parses each request, negotiates its options (blksize, tsize) and sends the first packet; this
module adds what a safe boot server needs around it: write requests get an access violation, a
path must stay inside the root after resolving `..` *and* symlinks, only regular files are served,
and every transfer ends with one log line (file, client, bytes, seconds, result). The rest of each
transfer runs in a pool of worker processes, a few per core (tftp_transfer.py: a lean DATA/ACK loop
serving many transfers per process); the receive loop is ours, so it can stop at once and report
transfers.

Transfers are capped at once, per client address (`max_per_client`, default 8: PXE firmware and its loaders
need 1-3) and in all (`max_transfers`, default 1024: a boot storm of a thousand nodes, one transfer each): a
request over a cap is dropped, not answered (the client sends it again after its time-out and is served
once a transfer has ended; an ERROR would make PXE firmware give up, or pxelinux skip to its next config
file), with one log line per burst of drops and one when the address (or anyone, for the total) is served
again. A transfer whose client stays silent holds its place for `timeout` x `retries` seconds. A request from
the port of a running transfer is that transfer's re-sent request if it is the same and comes within a
time-out; else the client started over (a machine reset mid-transfer asks again from the same port: GRUB and
iPXE pick their ports the same way at every boot, and give up long before the old transfer times out), and it
is served at once.

    server = TftpServer("build/tftpboot", host="10.0.0.1", port=69).start()
    ...
    server.stop()
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tftpy.TftpContexts import TftpContextServer
from tftpy.TftpPacketTypes import TftpPacketRRQ, TftpPacketWRQ
from tftpy.TftpShared import TftpErrors, TftpException
from tftpy.TftpStates import TftpStateServerRecvRRQ, TftpStateServerStart

from provision.errors import ProvisionError
from provision.model import GRUB_EFI_LOADER, GRUB_TFTP_DIR, Boot
from provision.services.admission import Admission, Wording
from provision.services.tftp_transfer import Outcome, TransferPool

log = logging.getLogger("provision.tftp")

PXELINUX_DIR = Path("/usr/lib/PXELINUX")
SYSLINUX_BIOS_DIR = Path("/usr/lib/syslinux/modules/bios")
# pxelinux.0 loads ldlinux.c32; the others are what menu/label configs commonly pull in. lpxelinux.0 is
# pxelinux with its own TCP/IP stack, the loader of boot.transport: http (http:// URLs in KERNEL/INITRD).
PXELINUX_FILES = ("pxelinux.0", "lpxelinux.0")
SYSLINUX_MODULES = ("ldlinux.c32", "libcom32.c32", "libutil.c32", "menu.c32", "chain.c32")
GRUB_EFI_DIR = Path("/usr/lib/grub/x86_64-efi")  # Debian package grub-efi-amd64-bin
GRUB_PLATFORM = "x86_64-efi"
_MAX_PACKET = 65536 + 4
_SO_TIMESTAMPNS = 35  # Linux: each datagram's kernel receive time (realtime); Python's socket module lacks it
_TIMESPEC = struct.Struct("ll")
MAX_TRANSFERS = 1024  # at once, in all
MAX_PER_CLIENT = 8  # at once, from one client address
_TRANSFERS = Wording("tftp", "transfers running", "for", "dropping requests", "serving requests", "dropping")


@dataclass(frozen=True)
class Transfer:
    """One finished TFTP request: `error` is None when the whole file went out."""

    filename: str
    client: str
    bytes: int
    seconds: float
    error: str | None


class _ContainedRecvRRQ(TftpStateServerRecvRRQ):
    """tftpy's read request handling plus: the resolved path (symlinks followed) must be a regular
    file inside the root, else the client gets an access violation."""

    def serverInitial(self, pkt, raddress, rport):
        sendoack = super().serverInitial(pkt, raddress, rport)  # keeps tftpy's own `..` check
        if os.path.lexists(self.full_path):
            real = os.path.realpath(self.full_path)
            if not real.startswith(self.context.root + os.sep) or not os.path.isfile(real):
                self.sendError(TftpErrors.AccessViolation)
                raise TftpException(f"refused {pkt.filename!r}: not a regular file inside the root")
        return sendoack


class _ContainedStart(TftpStateServerStart):
    def handle(self, pkt, raddress, rport):
        self.context.file_to_transfer = getattr(pkt, "filename", None)  # for the log, even if refused
        if isinstance(pkt, TftpPacketRRQ):
            return _ContainedRecvRRQ(self.context).handle(pkt, raddress, rport)
        if isinstance(pkt, TftpPacketWRQ):
            try:
                return super().handle(pkt, raddress, rport)  # meets _refuse_upload: access violation
            except TftpException as exc:
                raise TftpException(f"write request refused (read-only server): {exc}") from None
        return super().handle(pkt, raddress, rport)


def _refuse_upload(path, context):
    """tftpy's upload hook: returning None makes it answer with an access violation."""
    return None


class _Session(TftpContextServer):
    def __init__(self, host: str, port: int, root: str, timeout: float, retries: int):
        super().__init__(host, port, timeout, root, None, _refuse_upload, retries=retries, flock=False)
        self.state = _ContainedStart(self)


@dataclass(frozen=True)
class _Running:
    """A transfer handed to the worker pool."""

    client: tuple[str, int]
    filename: str | None
    started: float


@dataclass(frozen=True)
class _Asked:
    """The request that started a client's running transfer."""

    ident: int
    request: bytes
    at: float  # time.monotonic() when it was answered


class TftpServer:
    """A read-only TFTP server for `root`; `start()` binds (port 0 = any free port, see `.port`)
    and serves in a thread, `serve_forever()` serves in the caller's thread, `stop()` ends it.
    `workers` transfer processes (default: 4 per usable core, at most 32) run the transfers' data phase.
    At most `max_transfers` run at once, `max_per_client` for one client address: a request over a cap is
    dropped (see the module's docstring)."""

    def __init__(self, root: str | os.PathLike, host: str = "0.0.0.0", port: int = 69,
                 timeout: float = 2.0, retries: int = 5,
                 on_transfer: Callable[[Transfer], None] | None = None, workers: int | None = None,
                 max_transfers: int = MAX_TRANSFERS, max_per_client: int = MAX_PER_CLIENT):
        if logging.getLogger("tftpy").level == logging.NOTSET:
            logging.getLogger("tftpy").setLevel(logging.WARNING)  # our one line per transfer is enough
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise ProvisionError(f"TFTP root {root} is not a directory")
        if max_transfers < 1 or max_per_client < 1:
            raise ProvisionError(f"TFTP caps must be at least 1 (max_transfers {max_transfers}, "
                                 f"max_per_client {max_per_client})")
        self.host, self.timeout, self.retries = host, timeout, retries
        self.workers = workers or min(4 * len(os.sched_getaffinity(0)), 32)
        self.on_transfer = on_transfer
        self.max_transfers, self.max_per_client = max_transfers, max_per_client
        self._clients: dict[tuple[str, int], _Asked] = {}  # (address, port) -> its running transfer's request
        self._admission = Admission(max_transfers, max_per_client, _TRANSFERS, log)
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = threading.Event()
        self._stop_deadline = 0.0
        self._ended: dict[tuple[str, int], float] = {}  # client -> when its last transfer ended (time.time())
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("TFTP server is not bound yet")
        return self._sock.getsockname()[1]

    def running(self, address: str | None = None) -> int:
        """How many transfers run now: in all, or for one client address."""
        return self._admission.held(address)

    def bind(self) -> TftpServer:
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, self._requested_port))
            except OSError as exc:
                sock.close()
                raise ProvisionError(
                    f"TFTP cannot bind {self.host}:{self._requested_port}: {exc.strerror}") from exc
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            self._sock = sock
            log.info("tftp: serving %s read-only on %s:%d", self.root, self.host, self.port)
        return self

    def start(self) -> TftpServer:
        """Bind now (errors raise here) and serve in a daemon thread."""
        self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="tftp", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking requests, let running transfers finish for up to `grace` seconds, close."""
        self._stop_deadline = time.monotonic() + grace
        self._stop.set()
        self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(grace + 2 * self.timeout)
            self._thread = None

    def serve_forever(self) -> None:
        self.bind()
        running: dict[int, _Running] = {}  # by transfer id
        pool = TransferPool(self.timeout, self.retries, self.workers).start()
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ)
            selector.register(self._sock, selectors.EVENT_READ)
            for control in pool.sockets:
                selector.register(control, selectors.EVENT_READ)
            try:
                while not (self._stop.is_set() and
                           (not running or time.monotonic() > self._stop_deadline)):
                    for key, _ in selector.select(0.5):
                        if key.fileobj is self._wake_r:
                            self._wake_r.recv(64)
                            if self._stop.is_set() and self._sock in selector.get_map():
                                selector.unregister(self._sock)
                        elif key.fileobj is self._sock:
                            self._accept(pool, running)
                        else:
                            for ident, outcome in pool.collect(key.fileobj):
                                self._report(self._ended_transfer(running, ident), outcome)
                            if key.fileobj not in pool.sockets:  # a worker died: watch its successor
                                selector.unregister(key.fileobj)
                                for control in pool.sockets:
                                    if control not in selector.get_map():
                                        selector.register(control, selectors.EVENT_READ)
            finally:
                pool.stop()
                for ident in list(running):
                    self._report(self._ended_transfer(running, ident), Outcome(0, "server stopped"))
                for key, dropped in self._admission.refused_since().items():
                    log.info("tftp: dropped %d request(s)%s over the cap, not served since", dropped,
                             f" from {key}" if key else "")
                self._sock.close()
                self._wake_r.close()
                self._wake_w.close()
                log.info("tftp: stopped")

    def _accept(self, pool: TransferPool, running: dict[int, _Running]) -> None:
        """Answer a request with tftpy (refusal, or OACK / DATA 1) and hand its transfer to the pool."""
        try:
            buffer, ancillary, _, client = self._sock.recvmsg(_MAX_PACKET, socket.CMSG_SPACE(_TIMESPEC.size))
        except BlockingIOError:
            return
        started = time.monotonic()
        asked = self._clients.get(client)
        if asked is not None:
            if buffer == asked.request and started - asked.at < self.timeout:
                return  # a request re-sent while its transfer ran: that one answers
            # A new request, or the same one a time-out later, from the port of a running transfer: the client
            # started over (a machine reset mid-transfer: its loader asks again from the same port, and gives
            # up before the old transfer times out). Serve it; the old transfer times out on its own.
            log.info("tftp: %s:%d asked again while its transfer ran: serving the new request", *client)
        elif _arrival(ancillary) < self._ended.get(client, 0):
            return  # a request re-sent while its transfer ran, read only after it ended
        if not self._admission.admit(client[0]):
            return
        session = _Session(client[0], client[1], self.root, self.timeout, self.retries)
        try:
            session.start(buffer)
            ident = pool.submit(session.sock, client, session.fileobj, session.getBlocksize(),
                                session.next_block, session.last_pkt.buffer)
        except Exception as exc:  # tftpy raises TftpException, bad packets can raise others
            self._admission.release(client[0])
            self._report(_Running(client, session.file_to_transfer, started), Outcome(0, str(exc)))
            return
        finally:
            session.end()  # the worker has its own socket and file
        running[ident] = _Running(client, session.file_to_transfer, started)
        self._clients[client] = _Asked(ident, buffer, started)

    def _ended_transfer(self, running: dict[int, _Running], ident: int) -> _Running:
        """Take the transfer `ident` out of `running` and the caps' counts."""
        transfer = running.pop(ident)
        if (asked := self._clients.get(transfer.client)) is not None and asked.ident == ident:
            del self._clients[transfer.client]
        self._admission.release(transfer.client[0])
        return transfer

    def _report(self, transfer: _Running, outcome: Outcome) -> None:
        now = time.time()  # requests wait in the socket's queue far less than a minute
        client = transfer.client
        self._ended = {c: t for c, t in self._ended.items() if t > now - 60} | {client: now}
        record = Transfer(filename=transfer.filename or "?", client=f"{client[0]}:{client[1]}",
                          bytes=outcome.bytes, seconds=time.monotonic() - transfer.started, error=outcome.error)
        log.info("tftp: %s %s to %s: %d bytes in %.3f s%s", "sent" if record.error is None else "FAILED",
                 record.filename, record.client, record.bytes, record.seconds,
                 "" if record.error is None else f" ({record.error})")
        if self.on_transfer is not None:
            self.on_transfer(record)


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    """When the kernel received a datagram, from its SO_TIMESTAMPNS control message."""
    for level, kind, data in ancillary:
        if (level, kind) == (socket.SOL_SOCKET, _SO_TIMESTAMPNS):
            seconds, nanoseconds = _TIMESPEC.unpack(data)
            return seconds + nanoseconds / 1e9
    return time.time()


def install_boot_files(tftp_root: str | os.PathLike, boot: Boot, pxelinux_dir: Path = PXELINUX_DIR,
                       modules_dir: Path = SYSLINUX_BIOS_DIR, uefi: bool = False,
                       grub_efi_dir: Path = GRUB_EFI_DIR) -> list[Path]:
    """Copy Debian's pxelinux.0, lpxelinux.0 and syslinux BIOS modules to the top of `tftp_root` and the inventory's
    kernel and initrd to where its PXE configs name them (`boot.kernel_tftp_path`, ...); with `uefi` (any
    node has `firmware: uefi`) also GRUB's network image made by grub-mknetdir from `grub_efi_dir`
    (`grub/x86_64-efi/core.efi` and its modules; the per-MAC GRUB configs beside it come from the render).
    Returns the installed paths. Every source is checked first: a missing one is a ProvisionError naming
    it (and where it should come from), and nothing is copied."""
    sources = [(pxelinux_dir / name, name, "Debian package pxelinux") for name in PXELINUX_FILES]
    sources += [(modules_dir / name, name, "Debian package syslinux-common") for name in SYSLINUX_MODULES]
    sources += [(Path(boot.kernel), boot.kernel_tftp_path, "the inventory's boot.kernel"),
                (Path(boot.initrd), boot.initrd_tftp_path, "the inventory's boot.initrd")]
    problems = [f"missing {src} ({origin})" for src, _, origin in sources if not src.is_file()]
    mknetdir = shutil.which("grub-mknetdir")
    if uefi and not (grub_efi_dir / "modinfo.sh").is_file():
        problems.append(f"missing {grub_efi_dir} (Debian package grub-efi-amd64-bin), needed by firmware: uefi nodes")
    if uefi and mknetdir is None:
        problems.append("missing grub-mknetdir (Debian package grub-common), needed by firmware: uefi nodes")
    if boot.kernel_tftp_path == boot.initrd_tftp_path:
        problems.append(f"boot.kernel {boot.kernel} and boot.initrd {boot.initrd} share a file name")
    if problems:
        raise ProvisionError("cannot install boot files: " + "; ".join(problems))
    root = Path(tftp_root)
    with tempfile.TemporaryDirectory(prefix="provision-grub-") as scratch:
        if uefi:
            sources += _grub_net_image(mknetdir, grub_efi_dir, Path(scratch))
        installed = []
        for src, relpath, _ in sources:
            target = root / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)
            installed.append(target)
    return installed


def _grub_net_image(mknetdir: str, grub_efi_dir: Path, scratch: Path) -> list[tuple[Path, str, str]]:
    """Run grub-mknetdir into `scratch` (prefix /grub on the TFTP server, so GRUB looks for
    grub/grub.cfg-01-<mac> first); returns its platform files as (source, TFTP path, origin)."""
    argv = [mknetdir, f"--net-directory={scratch}", f"--subdir={GRUB_TFTP_DIR}", "-d", str(grub_efi_dir),
            "--locales=", "--fonts=", "--themes="]
    proc = subprocess.run(argv, capture_output=True, text=True)
    platform = scratch / GRUB_TFTP_DIR / GRUB_PLATFORM
    if proc.returncode != 0 or not (scratch / GRUB_EFI_LOADER).is_file():
        raise ProvisionError(f"grub-mknetdir failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return [(path, f"{GRUB_TFTP_DIR}/{GRUB_PLATFORM}/{path.name}", "grub-mknetdir")
            for path in sorted(platform.iterdir()) if path.is_file()]
