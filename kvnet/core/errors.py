"""The one error tree of kvnet.

Every error knows the CNI error code it maps to, so the CNI entry points can turn any
of them into the spec's error object without a lookup table of their own. Third-party
errors (subprocess, kubernetes client, pyroute2, libvirt, gRPC) are translated into
these at one boundary each.
"""

from __future__ import annotations

from typing import ClassVar


class KvnetError(Exception):
    """Base of all kvnet errors; ``cni_code`` goes into the CNI error object."""

    cni_code: ClassVar[int] = 999

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def to_cni(self, cni_version: str) -> dict[str, object]:
        """The CNI error object (spec section "Error")."""
        out: dict[str, object] = {"cniVersion": cni_version, "code": self.cni_code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


# --- CNI spec well-known codes -------------------------------------------------------


class IncompatibleVersion(KvnetError):
    cni_code = 1


class UnsupportedField(KvnetError):
    cni_code = 2


class UnknownContainer(KvnetError):
    cni_code = 3


class InvalidEnvironment(KvnetError):
    cni_code = 4


class IOFailure(KvnetError):
    cni_code = 5


class DecodeFailure(KvnetError):
    cni_code = 6


class InvalidConfig(KvnetError):
    cni_code = 7


class TryAgainLater(KvnetError):
    cni_code = 11


class StatusNotAvailable(KvnetError):
    cni_code = 50


class StatusNotAvailableNoDelegate(KvnetError):
    """STATUS: the plugin is not available because a dependency is missing."""

    cni_code = 51


# --- kvnet-specific (100+) -----------------------------------------------------------


class InvalidAnnotation(InvalidConfig):
    """A malformed pod/VMI annotation: a config error from the pod's author."""


class NetworkNotFound(KvnetError):
    """A NAD (or a conf file in confDir) named by the pod does not exist."""

    cni_code = 101


class DelegateFailed(KvnetError):
    """A delegate plugin returned an error; ``cni_code`` is the delegate's own."""

    cni_code = 102

    def __init__(self, msg: str, details: str = "", code: int | None = None) -> None:
        super().__init__(msg, details)
        if code is not None:
            self.cni_code = code  # type: ignore[misc]


class ApiFailure(KvnetError):
    """The Kubernetes API could not be reached or answered with an error."""

    cni_code = 103


class NetlinkFailure(KvnetError):
    """A netlink operation failed in a pod network namespace."""

    cni_code = 104


class TranslationError(KvnetError):
    """A VMI and its pod facts cannot be turned into VM NICs (names the interface)."""

    cni_code = 105


class RenderError(KvnetError):
    """Rendering or splicing domain XML failed (malformed domain, bad fragment)."""

    cni_code = 106


class DeviceError(KvnetError):
    """SR-IOV / PCI discovery failed (fake or real sysfs is not as expected)."""

    cni_code = 107
