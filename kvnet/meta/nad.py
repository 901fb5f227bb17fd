"""From a NetworkAttachmentDefinition (or a conf file) to the delegate config to run.

Multus's ``GetCNIConfig`` / ``GetCNIConfigFromFile`` / ``getNetDelegate`` and the
validation of ``LoadDelegateNetConf``, as pure functions: the NAD arrives as a dict
(from :mod:`kvnet.meta.k8s`), file access comes in as two small callables so tests pass
dicts instead of touching the disk. Every bad config names the NAD or file it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvnet.core.errors import InvalidConfig, IOFailure, NetworkNotFound
from kvnet.core.gojson import GoJsonError, go_json_kind, go_loads, go_type_error
from kvnet.core.naming import cni_name_ok

RESOURCE_NAME = "k8s.v1.cni.cncf.io/resourceName"  # the NAD annotation naming a device-plugin resource

ReadFile = Callable[[str], bytes]
ListDir = Callable[[str], Sequence[str]]

_CONF_EXTS = (".conf", ".json", ".conflist")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def delegate_problem(conf: Mapping[str, Any]) -> str | None:
    """Why a delegate config is unusable (Multus's LoadDelegateNetConf checks), or None."""
    ptype = conf.get("type")
    if ptype is not None and not isinstance(ptype, str):
        return f"LoadDelegateNetConf: error unmarshalling delegate config: {go_type_error(ptype, 'NetConf.type', 'string')}"
    if ptype:
        return None
    plugins = conf.get("plugins")
    if plugins is not None and not isinstance(plugins, list):
        err = go_type_error(plugins, "NetConfList.plugins", "[]*types.NetConf")
        return (
            f"LoadDelegateNetConf: failed with: LoadDelegateNetConfList: error unmarshalling delegate conflist: {err}"
        )
    if not plugins:
        return (
            "LoadDelegateNetConf: failed with: LoadDelegateNetConfList: delegate must have the 'type' or 'plugin' field"
        )
    for plugin in plugins:
        if not isinstance(plugin, dict):
            why = f"json: cannot unmarshal {go_json_kind(plugin)} into Go value of type types.NetConf"
            return f"LoadDelegateNetConf: failed with: LoadDelegateNetConfList: error unmarshalling delegate conflist: {why}"
    first = plugins[0].get("type")
    if not isinstance(first, str) or not first:
        return "LoadDelegateNetConf: failed with: LoadDelegateNetConfList: a plugin delegate must have the 'type' field"
    return None


@dataclass(frozen=True)
class Delegate:
    """A resolved network to call: its config and, for SR-IOV-like NADs, the device resource."""

    name: str  # "<ns>/<nad>" for NAD attachments, the conf's name for file networks
    config: Mapping[str, Any]  # conf or conflist, "name" injected when absent
    resource_name: str | None = None  # NAD annotation k8s.v1.cni.cncf.io/resourceName

    @property
    def is_conflist(self) -> bool:
        return "plugins" in self.config and not self.config.get("type")

    @property
    def conf_name(self) -> str:
        """The CNI network name inside the config (what libcni names its cache files by)."""
        name = self.config.get("name")
        return name if isinstance(name, str) else ""


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def read_file_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def list_dir_names(path: str) -> list[str]:
    """Plain files of a directory (sorted later); raises NotADirectoryError for a file."""
    return [e.name for e in os.scandir(path) if not e.is_dir()]


def conf_files(conf_dir: str, list_dir: ListDir, exts: Sequence[str] = _CONF_EXTS) -> list[str]:
    """libcni ``ConfFiles``: the files of ``conf_dir`` with a CNI extension, sorted by name."""
    names = sorted(n for n in list_dir(conf_dir) if os.path.splitext(n)[1] in exts)
    return [os.path.join(conf_dir, n) for n in names]


def _decode_object(data: bytes | str, what: str) -> dict[str, Any]:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    try:
        value = go_loads(text)
    except GoJsonError as err:
        raise InvalidConfig(f"{what}: {err}") from None
    if not isinstance(value, dict):
        raise InvalidConfig(
            f"{what}: json: cannot unmarshal {go_json_kind(value)} into Go value of type map[string]interface {{}}"
        )
    return value


def _check_delegate(conf: Mapping[str, Any], where: str, multus_where: str | None = None) -> None:
    """Multus's ``LoadDelegateNetConf`` checks (their message after ``multus_where``, which
    defaults to ``where: ``), then kvnet's own network-name check (after ``where``)."""
    problem = delegate_problem(conf)
    if problem:
        raise InvalidConfig(f"{where}: {problem}" if multus_where is None else f"{multus_where}{problem}")
    name = conf.get("name")
    if not isinstance(name, str) or not cni_name_ok(name):
        raise InvalidConfig(f"{where}: invalid characters found in network name {name!r}")


def load_conf_file(path: str, read_file: ReadFile = read_file_bytes) -> dict[str, Any]:
    """libcni ``ConfFromFile`` / ``ConfListFromFile`` (by extension), with libcni's messages."""
    try:
        data = read_file(path)
    except FileNotFoundError:
        raise NetworkNotFound(f"error reading {path}: no such file") from None
    except OSError as err:
        raise IOFailure(f"error reading {path}: {err.strerror or err}") from None
    if path.endswith(".conflist"):
        conf = _decode_object(data, f"Error loading CNI conflist file {path}: error parsing configuration list")
        if "name" not in conf:
            raise InvalidConfig(f"Error loading CNI conflist file {path}: error parsing configuration list: no name")
        if not isinstance(conf["name"], str):
            raise InvalidConfig(
                f"Error loading CNI conflist file {path}: error parsing configuration list: invalid name type "
                f"{go_json_kind(conf['name'])}"
            )
        plugins = conf.get("plugins")
        if "plugins" not in conf:
            raise InvalidConfig(
                f"Error loading CNI conflist file {path}: error parsing configuration list: no 'plugins' key"
            )
        if not isinstance(plugins, list):
            raise InvalidConfig(
                f"Error loading CNI conflist file {path}: error parsing configuration list: invalid 'plugins' type "
                f"{go_json_kind(plugins)}"
            )
        if not plugins:
            raise InvalidConfig(
                f"Error loading CNI conflist file {path}: error parsing configuration list: no plugins in list"
            )
        return conf
    return _decode_object(data, f"Error loading CNI config file {path}: error parsing configuration")


def config_from_file(
    name: str, conf_dir: str, *, read_file: ReadFile = read_file_bytes, list_dir: ListDir = list_dir_names
) -> dict[str, Any]:
    """nadutils ``GetCNIConfigFromFile``: the first conf file in ``conf_dir`` whose name is ``name``.

    ``name == ""`` takes the first file. A file that does not parse stops the search,
    as in Multus.
    """
    try:
        files = conf_files(conf_dir, list_dir)
    except OSError:
        files = []
    if not files:
        raise NetworkNotFound(f"No networks found in {conf_dir}")
    for path in files:
        conf = load_conf_file(path, read_file)
        if conf.get("name") == name or name == "":
            if not path.endswith(".conflist") and not conf.get("type"):
                raise InvalidConfig(f"Error loading CNI config file {path}: no 'type'; perhaps this is a .conflist?")
            return conf
    raise NetworkNotFound(f"no network available in the name {name} in cni dir {conf_dir}")


def delegate_from_nad(
    nad: Mapping[str, Any],
    conf_dir: str,
    *,
    read_file: ReadFile = read_file_bytes,
    list_dir: ListDir = list_dir_names,
    name_the_nad: bool = True,
) -> Delegate:
    """The delegate of a NAD: ``spec.config`` (conf or conflist) or, for an empty spec,
    the file in ``conf_dir`` whose ``name`` is the NAD's name.

    Every message names the NAD (``net-attach-def <ns>/<name>: ``); with ``name_the_nad``
    false, Multus's own messages (``GetCNIConfig: ...``, ``LoadDelegateNetConf: ...``) come
    as Multus's ``getKubernetesDelegate`` returns them, without it (the meta-plugin's
    choice); kvnet's own checks always name the NAD."""
    meta = _mapping(nad.get("metadata"))
    name = meta.get("name")
    namespace = meta.get("namespace") or ""
    if not isinstance(name, str) or not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        raise InvalidConfig(f"net-attach-def {namespace}/{name}: invalid object name {name!r}")
    if not isinstance(namespace, str) or (namespace and not _DNS1123_LABEL.match(namespace)):
        raise InvalidConfig(f"net-attach-def {namespace}/{name}: invalid namespace {namespace!r}")
    full = f"{namespace}/{name}"
    where = f"net-attach-def {full}"
    multus_where = f"{where}: " if name_the_nad else ""
    annotations = _mapping(meta.get("annotations"))
    resource = annotations.get(RESOURCE_NAME)
    resource_name = resource if isinstance(resource, str) and resource else None

    spec = nad.get("spec")
    if spec is not None and not isinstance(spec, Mapping):
        raise InvalidConfig(f"{where}: spec is a JSON {go_json_kind(spec)}, expected an object with a config string")
    config_text = (spec or {}).get("config")
    if config_text is not None and not isinstance(config_text, str):
        raise InvalidConfig(
            f"{where}: spec.config must be a string holding CNI JSON, got a JSON {go_json_kind(config_text)}"
        )

    if not config_text:
        try:
            conf = config_from_file(name, conf_dir, read_file=read_file, list_dir=list_dir)
        except (InvalidConfig, NetworkNotFound, IOFailure) as err:
            raise type(err)(f"{multus_where}GetCNIConfig: err in GetCNIConfigFromFile: {err.msg}") from None
    else:
        conf = _decode_object(
            config_text, f"{multus_where}GetCNIConfig: err in getCNIConfigFromSpec: failed to unmarshal Spec.Config"
        )
        if conf.get("name") in (None, ""):
            conf = {**conf, "name": name}
    _check_delegate(conf, where, multus_where)
    return Delegate(name=full, config=conf, resource_name=resource_name)


def delegate_from_conf_dir(
    name: str, conf_dir: str, *, read_file: ReadFile = read_file_bytes, list_dir: ListDir = list_dir_names
) -> Delegate:
    """A ``clusterNetwork`` / ``defaultNetworks`` entry that is not a NAD (Multus ``getNetDelegate``).

    A plain name is a conf ``name`` in ``conf_dir``; a value with ``/`` is a directory
    (its first conf file) or a conf/conflist file path. The caller tries the NAD first.
    """
    if "/" not in name:
        try:
            conf = config_from_file(name, conf_dir, read_file=read_file, list_dir=list_dir)
        except NetworkNotFound:
            raise NetworkNotFound(f"getNetDelegate: cannot find network: {name}") from None
        where = f"network {name} in {conf_dir}"
    else:
        try:
            files = conf_files(name, list_dir, (".conf", ".conflist"))
            is_dir = True
        except NotADirectoryError:
            files, is_dir = [], False
        except FileNotFoundError:
            raise NetworkNotFound(f"getNetDelegate: cannot find network: {name}") from None
        except OSError as err:
            raise IOFailure(f"getNetDelegate: cannot read {name}: {err.strerror or err}") from None
        if is_dir:
            if not files:
                raise NetworkNotFound(f"getNetDelegate: cannot find network: {name}")
            conf = config_from_file("", name, read_file=read_file, list_dir=list_dir)
        else:
            conf = load_conf_file(name, read_file)
            if not name.endswith(".conflist") and not conf.get("type"):
                raise InvalidConfig(f"error loading CNI config file {name}: no 'type'; perhaps this is a .conflist?")
        where = f"network file {name}"
    _check_delegate(conf, where)
    return Delegate(name=str(conf["name"]), config=conf, resource_name=None)
