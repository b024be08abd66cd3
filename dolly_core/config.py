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
    """Parse a config text; ConfigError naming the line and what was expected."""
    reader = _Reader(text, filename)
    files = reader.io_files()
    server = reader.endpoint(*reader.take(("server",), 1, "'server NAME'"))
    first = reader.take(("firstclient",), 1, "'firstclient NAME'")
    last = reader.take(("lastclient",), 1, "'lastclient NAME'")
    clients = reader.client_names()
    reader.take(("endconfig",), 0, "'endconfig'")
    reader.at_end()
    endpoints = tuple(reader.endpoint(no, w) for no, w in clients)
    names = [w for _, w in clients]
    if len(set(endpoints)) != len(endpoints):
        dup = next(w for i, w in enumerate(names) if endpoints[i] in endpoints[:i])
        raise ConfigError(f"{filename}: client {dup!r} appears twice in the ring")
    for (no, text), keyword, name, which in ((first, "firstclient", names[0], "first"),
                                             (last, "lastclient", names[-1], "last")):
        if text != name:
            raise reader.fail(no, f"'{keyword} {name}' (the {which} name of the client list)", [keyword, text])
    return DollyConfig(tuple(files), server, endpoints)


class _Reader:
    """The config's non-blank lines as words, read in order; each step names what it expected."""

    def __init__(self, text: str, filename: str):
        lines = [(no, line.split("#", 1)[0].split()) for no, line in enumerate(text.splitlines(), 1)]
        self.lines = [(no, words) for no, words in lines if words]
        self.filename = filename
        self.pos = 0

    def fail(self, no: int | None, expected: str, got: list[str] | None = None) -> ConfigError:
        where = f"{self.filename}:{no}" if no else f"{self.filename}: at end of file"
        found = f", found {' '.join(got)!r}" if got else ""
        return ConfigError(f"{where}: expected {expected}{found}")

    def next_line(self, expected: str) -> tuple[int, list[str]]:
        if self.pos >= len(self.lines):
            raise self.fail(None, expected)
        self.pos += 1
        return self.lines[self.pos - 1]

    def take(self, keywords: tuple[str, ...], nargs: int, expected: str) -> tuple[int, str | None]:
        """A `KEYWORD [ARG]` line: its number and argument."""
        no, words = self.next_line(expected)
        if words[0] not in keywords or len(words) != 1 + nargs:
            raise self.fail(no, expected, words)
        return no, words[1] if nargs else None

    def count(self, no: int, word: str, what: str) -> int:
        if not word.isdigit() or int(word) < 1:
            raise self.fail(no, f"a positive number of {what}", [word])
        return int(word)

    def endpoint(self, no: int, word: str) -> Endpoint:
        try:
            return parse_endpoint(word)
        except ValueError as exc:
            raise ConfigError(f"{self.filename}:{no}: {exc}") from None

    def io_files(self) -> list[IOFile]:
        """`iofiles N` and its N `IN > OUT` / `IN >> OUT` lines."""
        no, n_text = self.take(("iofiles",), 1, "'iofiles N'")
        files = []
        for _ in range(self.count(no, n_text, "iofiles")):
            no, words = self.next_line("'IN > OUT' or 'IN >> OUT'")
            if len(words) != 3 or words[1] not in (">", ">>"):
                raise self.fail(no, "'IN > OUT' or 'IN >> OUT'", words)
            files.append(IOFile(words[0], words[2], cook=words[1] == ">>"))
        return files

    def client_names(self) -> list[tuple[int, str]]:
        """`clients N` (or `client N`) and the N names after it, with their line numbers."""
        no, n_text = self.take(("clients", "client"), 1, "'clients N'")
        wanted = self.count(no, n_text, "clients")
        clients: list[tuple[int, str]] = []
        while len(clients) < wanted:
            no, words = self.next_line(f"{wanted} client names (found {len(clients)})")
            if words[0] == "endconfig":
                raise self.fail(no, f"{wanted} client names before 'endconfig' (found {len(clients)})", words)
            clients.extend((no, w) for w in words)
        if len(clients) > wanted:
            no, extra = clients[wanted]
            raise self.fail(no, f"exactly {wanted} client names ('clients {wanted}')", [extra])
        return clients

    def at_end(self) -> None:
        if self.pos < len(self.lines):
            raise self.fail(self.lines[self.pos][0], "nothing after 'endconfig'", self.lines[self.pos][1])
