"""dollyS and dollyC: parse arguments, run, turn errors into exit codes (one place each).

    dollyS -v -f CONFIG [--timeout S] [--chunk-size B] [--json FILE] [--progress FILE] [--wait S]
           [--rate B/S] [--tag blake3|sha256] [--digest sha256|blake3|none] [--secret-file F] [-q]
    dollyC -v [--listen HOST:PORT] [--root DIR] [--wait S] [--secret-file F] [-q]

The shared secret comes from --secret-file or the environment variable DOLLY_SECRET; with none on
both sides the ring runs without authentication; a mismatch is an error on both sides.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence

from dolly_core import digest, tags
from dolly_core.config import DEFAULT_PORT, ConfigError, parse_config, parse_endpoint
from dolly_core.node import Node
from dolly_core.server import Server, Settings, SetupError
from dolly_core.status import StatusFile, write_atomically

OK, FAILED, USAGE, BAD_INPUT, INTERRUPTED = 0, 1, 2, 3, 130


def positive(kind):
    def convert(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return convert


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    parser.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    parser.add_argument("--secret-file", metavar="FILE",
                        help="shared secret for authentication (default: $DOLLY_SECRET)")


def read_secret(args, env: Mapping[str, str]) -> bytes | None:
    if args.secret_file:
        with open(args.secret_file, "rb") as f:
            secret = f.read().strip()
        if not secret:
            raise ValueError(f"{args.secret_file}: empty secret")
        return secret
    value = env.get("DOLLY_SECRET", "")
    return value.encode() if value else None


def make_logger(name: str, args) -> logging.Logger:
    log = logging.getLogger(name)
    log.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{name}: %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.ERROR if args.quiet else logging.INFO if args.verbose else logging.WARNING)
    return log


def server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dollyS", description="Clone files to a ring of dollyC nodes.")
    common_arguments(parser)
    parser.add_argument("-f", "--config", required=True, metavar="CONFIG", help="dolly config file")
    parser.add_argument("--timeout", type=positive(float), default=10.0, metavar="SECONDS",
                        help="a node silent this long is dead and short-cut (default 10)")
    parser.add_argument("--chunk-size", type=positive(int), default=4 << 20, metavar="BYTES",
                        help="chunk size (default 4 MiB)")
    parser.add_argument("--json", metavar="FILE", help="write the final report as JSON")
    parser.add_argument("--progress", metavar="FILE",
                        help="keep a live JSON status of every node in FILE (replaced about once a second)")
    parser.add_argument("--wait", type=positive(float), default=60.0, metavar="SECONDS",
                        help="keep trying to reach the first client this long (default 60)")
    parser.add_argument("--rate", type=positive(float), default=0.0, metavar="BYTES_PER_S",
                        help="limit the ring's rate (default: as fast as the links go)")
    parser.add_argument("--tag", choices=tags.ALGORITHMS, default=tags.DEFAULT,
                        help="the pieces' tag algorithm, keyed with the run's secret (default blake3 where this "
                             "Python has the blake3 module, else sha256); every dollyC must be able to check it")
    parser.add_argument("--digest", choices=digest.FILE_DIGESTS, default=digest.SHA256,
                        help="each file's plain digest in the report (default sha256, as sha256sum prints it; "
                             "blake3 costs the server about a third of that, none nothing); every byte is "
                             "verified by the pieces' tags whatever this says")
    return parser


def server_main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        args = server_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    log = make_logger("dollyS", args)
    try:
        secret = read_secret(args, env)
        with open(args.config, encoding="utf-8") as f:
            config = parse_config(f.read(), args.config)
        settings = Settings(args.chunk_size, args.timeout, args.wait, args.rate, args.tag, args.digest)
        server = Server(config, settings, secret, log)
    except (ConfigError, SetupError, OSError, ValueError) as exc:
        log.error("%s", exc)
        return BAD_INPUT
    clients = server.setup.ring.members[1:-1]
    total = sum(f.size for f in server.setup.files)
    status = None
    if args.progress:
        try:
            status = StatusFile(args.progress, clients, total, log)
        except OSError as exc:
            log.error("cannot write the progress file %s: %s", args.progress, exc.strerror or exc)
            return BAD_INPUT
    view = None
    if not args.quiet and (sys.stderr.isatty() or args.verbose):
        from dolly_core.progress import Progress  # rich is imported only when something is shown
        view = Progress(clients, total, live=sys.stderr.isatty(), log=log)
    watchers = [w for w in (view, status) if w is not None]

    def tick(running: Server) -> None:
        progress = running.progress()
        for watcher in watchers:
            watcher.update(progress)
    log.info("sending %d file(s), %d bytes, to %d node(s)", len(server.setup.files), total, len(clients))
    try:
        report = server.run(on_tick=tick if watchers else None)
    except KeyboardInterrupt:
        log.error("interrupted")
        return INTERRUPTED
    finally:
        if view:
            view.stop()
    if status:
        status.finish(server.progress(), report)
    if args.json:
        write_atomically(args.json, report)
    for node in report["nodes"]:
        if not node["ok"]:
            log.error("node %s failed: %s", node["name"], node["error"])
    if report["error"]:
        log.error("%s", report["error"])
    rate = total / report["seconds"] / 1e6 if report["seconds"] else 0.0
    log.info("%s in %.2f s (%.1f MB/s per node)", "all nodes verified" if report["ok"] else "FAILED",
             report["seconds"], rate)
    return OK if report["ok"] else FAILED


def client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dollyC", description="Join one dolly ring run and exit.")
    common_arguments(parser)
    parser.add_argument("--listen", default=f"0.0.0.0:{DEFAULT_PORT}", metavar="HOST:PORT",
                        help=f"address to listen on (default all addresses, port {DEFAULT_PORT})")
    parser.add_argument("--root", metavar="DIR", help="write every OUT path below DIR")
    parser.add_argument("--wait", type=positive(float), default=None, metavar="SECONDS",
                        help="give up if no run starts within this time (default: wait forever)")
    return parser


def client_main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    try:
        args = client_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    log = make_logger(f"dollyC[{args.listen}]", args)
    try:
        secret = read_secret(args, env)
        endpoint = parse_endpoint(args.listen)
        family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((endpoint.host, endpoint.port))
        listener.listen(16)
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return BAD_INPUT
    log.info("listening on %s", endpoint)
    try:
        return Node(listener, secret, args.root, log).serve(args.wait)
    except KeyboardInterrupt:
        log.error("interrupted")
        return INTERRUPTED


if __name__ == "__main__":
    tool = sys.argv.pop(1) if len(sys.argv) > 1 and sys.argv[1] in ("server", "client") else None
    if tool is None:
        sys.exit("usage: python -m dolly_core.cli {server|client} ARGS")
    sys.exit(server_main() if tool == "server" else client_main())
