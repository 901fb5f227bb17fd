"""Multus's error wording, one helper per boundary (Multus's ``cmdErr``, ``cmdPluginErr``,
``delegateDel``, ``delegateCheck``), so a user can search Multus's docs for kvnet's message.

Each step that can fail wraps its error once, here, with the context of that step; the
error keeps its class, CNI code and details.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from kvnet.cni.delegate import libcni_text
from kvnet.core.errors import KvnetError
from kvnet.core.gojson import go_quote

if TYPE_CHECKING:
    from kvnet.meta.cache import CachedDelegate
    from kvnet.meta.pod import PodArgs


def reword(err: KvnetError, msg: str) -> KvnetError:
    """The same error (class, code, details) with a message that says where it happened."""
    new = copy.copy(err)
    new.msg = msg
    new.args = (msg,)
    return new


def cmd_prefix(pa: PodArgs | None) -> str:
    """Multus's ``cmdErr`` prefix: the pod the call is about."""
    return f"kvnet: [{pa.namespace}/{pa.name}/{pa.uid}]: " if pa is not None else "kvnet: "


def cmd_err(pa: PodArgs | None, err: KvnetError, what: str) -> KvnetError:
    """``cmdErr``: ``kvnet: [ns/name/uid]: <what>: <cause>``."""
    return reword(err, f"{cmd_prefix(pa)}{what}: {err.msg}")


def plugin_err(pa: PodArgs, network: str, err: KvnetError) -> KvnetError:
    """``cmdPluginErr`` for a delegate's ADD: the pod and the network it failed on, then
    the delegate's error as libcni reports it."""
    return reword(
        err,
        f"[{pa.namespace}/{pa.name}/{pa.uid}:{network}]: error adding container to network {go_quote(network)}: "
        f"{libcni_text(err)}",
    )


def delegate_del_err(d: CachedDelegate, cause: str) -> str:
    """``DelegateDel``: one delegate's failed DEL (DEL collects them all, so this is text);
    ``cause`` is the error as libcni reports it (:func:`~kvnet.cni.delegate.libcni_text`)."""
    if d.is_conflist:
        return (
            f"DelegateDel: error invoking ConflistDel - {go_quote(d.network_name)}: "
            f"conflistDel: error in getting result from DelNetworkList: {cause}"
        )
    return (
        f"DelegateDel: error invoking DelegateDel - {go_quote(d.plugin_type)}: "
        f"error in getting result from DelNetwork: {cause}"
    )


def delegate_check_err(d: CachedDelegate, err: KvnetError) -> KvnetError:
    """``DelegateCheck``: one delegate's failed CHECK (``confCheck`` / ``conflistCheck``)."""
    cause = libcni_text(err)
    if d.is_conflist:
        return reword(
            err,
            f"DelegateCheck: error invoking ConflistCheck - {go_quote(d.network_name)}: "
            f"conflistCheck: error in getting result from CheckNetworkList: {cause}",
        )
    return reword(
        err,
        f"DelegateCheck: error invoking DelegateCheck - {go_quote(d.plugin_type)}: "
        f"error in getting result from CheckNetwork: {cause}",
    )
