"""The classic Dolly config grammar (pure parsing, no I/O beyond reading the text given).

    iofiles N
    IN > OUT          (copy as is)
    IN >> OUT         (cook on the node: decompress by suffix, untar archives into OUT)
    server NAME|IP|HOST:PORT
    firstclient NAME
    lastclient NAME
    clients N         (`client N` is accepted too)
    NAME ...          (N names, one per line or several per line)
    endconfig

Blank lines and `#` comments are ignored. Every error names the line and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PORT = 9998


class ConfigError(ValueError):
    """A config text that does not follow the grammar; the message names file, line and expectation."""


@dataclass(frozen=True)
class Endpoint:
    """A ring member as written in the config: a name or IP, and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class IOFile:
    source: str
    target: str
    cook: bool


@dataclass(frozen=True)
class DollyConfig:
    files: tuple[IOFile, ...]
    server: Endpoint
    clients: tuple[Endpoint, ...]


def parse_endpoint(text: str, default_port: int = DEFAULT_PORT) -> Endpoint:
    """`NAME`, `IP`, `HOST:PORT` or `[IPv6]:PORT` -> Endpoint; raises ValueError on a bad port."""
    host, port = text, default_port
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"unclosed '[' in {text!r}")
        host, rest = text[1:close], text[close + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected ':PORT' after ']' in {text!r}")
            port = _port(rest[1:], text)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text, text)
    if not host:
        raise ValueError(f"empty host in {text!r}")
    return Endpoint(host, port)


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r} in {whole!r} (expected 1..65535)")
    return int(text)


def parse_config(text: str, filename: str = "<config>") -> DollyConfig:
    lines = [(no, line.split("#", 1)[0].split()) for no, line in enumerate(text.splitlines(), 1)]
    lines = [(no, words) for no, words in lines if words]
    pos = 0

    def fail(no: int | None, expected: str, got: list[str] | None = None) -> ConfigError:
        where = f"{filename}:{no}" if no else f"{filename}: at end of file"
        found = f", found {' '.join(got)!r}" if got else ""
        return ConfigError(f"{where}: expected {expected}{found}")

    def take(keywords: tuple[str, ...], nargs: int, expected: str) -> tuple[int, list[str]]:
        nonlocal pos
        if pos >= len(lines):
            raise fail(None, expected)
        no, words = lines[pos]
        if words[0] not in keywords or len(words) != 1 + nargs:
            raise fail(no, expected, words)
        pos += 1
        return no, words[1:]

    def count(no: int, word: str, what: str) -> int:
        if not word.isdigit() or int(word) < 1:
            raise fail(no, f"a positive number of {what}", [word])
        return int(word)

    def endpoint(no: int, word: str) -> Endpoint:
        try:
            return parse_endpoint(word)
        except ValueError as exc:
            raise ConfigError(f"{filename}:{no}: {exc}") from None

    no, (n_text,) = take(("iofiles",), 1, "'iofiles N'")
    files = []
    for _ in range(count(no, n_text, "iofiles")):
        if pos >= len(lines):
            raise fail(None, "'IN > OUT' or 'IN >> OUT'")
        no, words = lines[pos]
        if len(words) != 3 or words[1] not in (">", ">>"):
            raise fail(no, "'IN > OUT' or 'IN >> OUT'", words)
        files.append(IOFile(words[0], words[2], cook=words[1] == ">>"))
        pos += 1
    no, (server_text,) = take(("server",), 1, "'server NAME'")
    server = endpoint(no, server_text)
    first_no, (first_text,) = take(("firstclient",), 1, "'firstclient NAME'")
    last_no, (last_text,) = take(("lastclient",), 1, "'lastclient NAME'")
    no, (n_text,) = take(("clients", "client"), 1, "'clients N'")
    wanted = count(no, n_text, "clients")
    clients: list[tuple[int, str]] = []
    while len(clients) < wanted:
        if pos >= len(lines):
            raise fail(None, f"{wanted} client names (found {len(clients)})")
        no, words = lines[pos]
        if words[0] == "endconfig":
            raise fail(no, f"{wanted} client names before 'endconfig' (found {len(clients)})", words)
        clients.extend((no, w) for w in words)
        pos += 1
    if len(clients) > wanted:
        no, extra = clients[wanted]
        raise fail(no, f"exactly {wanted} client names ('clients {wanted}')", [extra])
    take(("endconfig",), 0, "'endconfig'")
    if pos < len(lines):
        raise fail(lines[pos][0], "nothing after 'endconfig'", lines[pos][1])
    endpoints = tuple(endpoint(no, w) for no, w in clients)
    names = [w for _, w in clients]
    if len(set(endpoints)) != len(endpoints):
        dup = next(w for i, w in enumerate(names) if endpoints[i] in endpoints[:i])
        raise ConfigError(f"{filename}: client {dup!r} appears twice in the ring")
    if first_text != names[0]:
        raise fail(first_no, f"'firstclient {names[0]}' (the first name of the client list)", ["firstclient", first_text])
    if last_text != names[-1]:
        raise fail(last_no, f"'lastclient {names[-1]}' (the last name of the client list)", ["lastclient", last_text])
    return DollyConfig(tuple(files), server, endpoints)
