"""vhost-user attachments: the socket a network-status device-info names.

A vhost-user attachment reaches the VM as ``<interface type="vhostuser">`` with a unix
socket path and a mode (docs/vhost-user.md). The facts come from the Network Plumbing WG
device-info object, ``{"type": "vhost-user", "vhost-user": {"mode": ..., "path": ...}}``.
The path goes into domain XML, so it is checked here before any rendering: absolute, no
``..`` component, none of the characters that XML attributes or shells treat specially.

The device-info ``mode`` is the backend's role on the socket (``client``: the vswitch
connects, so QEMU must listen), the opposite of libvirt's ``<source mode>``, which is
QEMU's own; :attr:`VhostUserSocket.qemu_mode` turns one into the other (docs/vhost-user.md
has the sources).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from kvnet.core.errors import InvalidConfig

MODES = ("client", "server")
# device-info ``mode`` (the backend's role on the socket: the vswitch's, as the userspace CNI's
# ``host.vhost.mode``) -> QEMU's role, which is what libvirt's ``<source type="unix" mode>`` means
QEMU_MODE = {"client": "server", "server": "client"}
_FORBIDDEN = frozenset("\"'<>&\\\n\r\t\0")
# control characters, lone surrogates and non-characters: none can stand in an XML attribute
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Cn"})


@dataclass(frozen=True)
class VhostUserSocket:
    """A checked vhost-user socket: an absolute normalised path and its mode."""

    path: str
    mode: str  # as the device-info says it: the backend's role ("client": the backend connects)

    @property
    def qemu_mode(self) -> str:
        """QEMU's role, libvirt's ``<source mode>``: the other end of the backend's."""
        return QEMU_MODE[self.mode]


def check_socket_path(path: object) -> str:
    """The path unchanged if it is safe to put into domain XML, else ``InvalidConfig`` (7)."""
    if not isinstance(path, str) or not path:
        raise InvalidConfig("vhost-user socket path must be a non-empty string", repr(path))
    bad = sorted({c for c in path if c in _FORBIDDEN or unicodedata.category(c) in _FORBIDDEN_CATEGORIES})
    if bad:
        raise InvalidConfig("vhost-user socket path contains a forbidden character", f"{path!r}: {bad!r}")
    if not path.startswith("/"):
        raise InvalidConfig("vhost-user socket path must be absolute", path)
    if ".." in path.split("/"):
        raise InvalidConfig("vhost-user socket path must not contain '..'", path)
    if path.endswith("/"):
        raise InvalidConfig("vhost-user socket path names a directory", path)
    return path


def from_device_info(info: Mapping[str, object]) -> VhostUserSocket | None:
    """The socket of a device-info object of type ``vhost-user``; ``None`` for other types."""
    if info.get("type") != "vhost-user":
        return None
    body = info.get("vhost-user")
    if not isinstance(body, Mapping):
        raise InvalidConfig("device-info of type vhost-user has no 'vhost-user' object", repr(body))
    mode = body.get("mode")
    if mode not in MODES:
        raise InvalidConfig("vhost-user mode must be 'client' or 'server'", repr(mode))
    return VhostUserSocket(path=check_socket_path(body.get("path")), mode=str(mode))
