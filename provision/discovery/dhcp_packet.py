"""Parse an Ethernet frame into the DHCP client request it carries (RFC 2131/2132), or None. Pure."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from provision.model import Firmware

ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100
UDP = 17
BOOTPS = 67
BOOTREQUEST = 1
MAGIC_COOKIE = b"\x63\x82\x53\x63"
BOOTP_FIXED = 236  # op .. file, before the magic cookie

# option 53 values
DHCPDISCOVER, DHCPREQUEST = 1, 3
OPT_PAD, OPT_END, OPT_HOSTNAME, OPT_MESSAGE_TYPE, OPT_VENDOR_CLASS, OPT_CLIENT_ARCH = 0, 255, 12, 53, 60, 93
# option 93 (RFC 4578, IANA "Processor Architecture Types"): x86 BIOS; EFI IA32, EFI BC (x86-64), EFI x86-64,
# x86-64 UEFI HTTP boot
ARCH_FIRMWARE = {0: Firmware.BIOS, 6: Firmware.UEFI, 7: Firmware.UEFI, 9: Firmware.UEFI, 16: Firmware.UEFI}


@dataclass(frozen=True)
class DhcpRequest:
    """A client's BOOTREQUEST: its hardware address (chaddr, not the frame's source: a relay forwards it)."""

    mac: str  # lower case, colon separated
    message_type: int | None  # option 53; None: plain BOOTP
    xid: int
    hostname: str | None = None  # option 12
    vendor_class: str | None = None  # option 60, e.g. PXEClient:Arch:00000:UNDI:002001
    client_arch: int | None = None  # option 93's first architecture type

    @property
    def is_discover(self) -> bool:
        return self.message_type == DHCPDISCOVER

    @property
    def firmware(self) -> Firmware | None:
        """What firmware the client's option 93 says it boots with (x86 BIOS or UEFI); None: not said or other."""
        return ARCH_FIRMWARE.get(self.client_arch) if self.client_arch is not None else None


def parse_frame(frame: bytes) -> DhcpRequest | None:
    """The DHCP/BOOTP request in an Ethernet II frame (an 802.1Q tag allowed) sent to UDP port 67; None for
    any other frame, a fragment, a reply or a truncated or malformed packet."""
    if len(frame) < 14:
        return None
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    offset = 14
    if ethertype == ETH_P_8021Q:
        if len(frame) < 18:
            return None
        (ethertype,) = struct.unpack_from("!H", frame, 16)
        offset = 18
    if ethertype != ETH_P_IP:
        return None
    return parse_ipv4(frame[offset:])


def parse_ipv4(packet: bytes) -> DhcpRequest | None:
    """As parse_frame, from the IPv4 header on."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_len = (packet[0] & 0x0F) * 4
    total_len, flags_fragment, protocol = struct.unpack_from("!H2xHxB", packet, 2)
    if header_len < 20 or protocol != UDP or flags_fragment & 0x3FFF or not header_len + 8 <= total_len <= len(packet):
        return None  # not UDP, or a fragment (more fragments set or an offset): no whole BOOTP header
    _, dst_port, udp_len = struct.unpack_from("!HHH", packet, header_len)
    if dst_port != BOOTPS or udp_len < 8 or header_len + udp_len > total_len:
        return None
    return parse_bootp(packet[header_len + 8:header_len + udp_len])


def parse_bootp(payload: bytes) -> DhcpRequest | None:
    """As parse_frame, from the BOOTP message on."""
    if len(payload) < BOOTP_FIXED:
        return None
    op, htype, hlen, _, xid = struct.unpack_from("!BBBBI", payload, 0)
    if op != BOOTREQUEST or htype != 1 or hlen != 6:
        return None  # a reply, or not Ethernet
    mac = ":".join(f"{b:02x}" for b in payload[28:34])
    options = _options(payload[BOOTP_FIXED + 4:]) if payload[BOOTP_FIXED:BOOTP_FIXED + 4] == MAGIC_COOKIE else {}
    if options is None:
        return None
    message_type = options.get(OPT_MESSAGE_TYPE)
    arch = options.get(OPT_CLIENT_ARCH)
    return DhcpRequest(mac=mac, message_type=message_type[0] if message_type and len(message_type) == 1 else None,
                       xid=xid, hostname=_text(options.get(OPT_HOSTNAME)),
                       vendor_class=_text(options.get(OPT_VENDOR_CLASS)),
                       client_arch=struct.unpack_from("!H", arch)[0] if arch and len(arch) >= 2 else None)


def _options(data: bytes) -> dict[int, bytes] | None:
    """The options (code -> value; a repeated code's values joined, RFC 3396); None if one runs past the end."""
    options: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            i += 1
            continue
        if i + 2 > len(data) or i + 2 + data[i + 1] > len(data):
            return None
        options[code] = options.get(code, b"") + data[i + 2:i + 2 + data[i + 1]]
        i += 2 + data[i + 1]
    return options


def _text(value: bytes | None) -> str | None:
    return value.decode("ascii", "replace").rstrip("\0") if value else None
