"""Running delegate CNI plugins: lookup, VERSION negotiation, timeouts, conflists, cache.

This is kvnet's libcni: the meta-plugin and the binding plugin call real CNI plugins
through :class:`DelegateRunner`. The one side effect, executing a binary, comes in as
an :class:`Exec` so tests can pass a fake; the default runs the plugin in its own
process group and kills the whole group at the timeout.

No delegate outlives the call that started it (docs/reliability.md): each one gets
``PR_SET_PDEATHSIG`` (SIGKILL when the thread that started it ends, so a ``kill -9`` of
kvnet takes its delegates along), and a call holds its container's :class:`CallGuard`,
a lock that the delegates inherit, so the next call for the same container waits for
whatever a killed kvnet left running (and kills it when its owner is gone) before it
touches anything.

Debian's plugins stop at CNI 1.0.0 while kvnet's callers may speak 1.1.0, so every call
asks the plugin which versions it speaks (once per binary), sends the highest version
both sides know, and converts the result back to the caller's version.

Stdlib only: this module is on the CNI hot path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kvnet.cni import libcni_cache
from kvnet.cni.protocol import validate_container_id, validate_ifname
from kvnet.cni.results import ALL_VERSIONS, convert_result, version_key
from kvnet.core.errors import (
    DecodeFailure,
    DelegateFailed,
    IncompatibleVersion,
    InvalidConfig,
    KvnetError,
    TryAgainLater,
)
from kvnet.core.naming import cni_name_ok

log = logging.getLogger(__name__)

FALLBACK_BIN_DIR = "/usr/lib/cni"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KILL_GRACE = 5.0  # seconds to collect a killed plugin's pipes
MAX_ERROR_TEXT = 4096
_RESULT_KEYS = frozenset({"interfaces", "ips", "routes", "ip4", "ip6"})


@dataclass(frozen=True)
class DelegateEnv:
    """The runtime side of one delegate call (what becomes the CNI_* variables)."""

    container_id: str
    netns: str
    ifname: str
    args: str  # CNI_ARGS exactly as it is to be passed
    path: tuple[str, ...] = ()


class Exec(Protocol):
    """Run ``plugin`` with ``stdin`` and exactly ``env``; return (status, stdout, stderr).

    Raises :class:`ExecTimeout` once the plugin ran past ``timeout`` and was killed.
    """

    def __call__(
        self, plugin: str, stdin: bytes, env: Mapping[str, str], timeout: float
    ) -> tuple[int, bytes, bytes]: ...


PluginObserver = Callable[[str, str, float, bool], None]  # (plugin type, command, seconds, timed out)


class ExecTimeout(Exception):
    """Raised by an :class:`Exec` after it killed a plugin that ran past its timeout."""

    def __init__(self, plugin: str, timeout: float) -> None:
        super().__init__(f"{plugin} ran past {timeout:g}s and was killed")
        self.plugin = plugin
        self.timeout = timeout


def subprocess_exec(plugin: str, stdin: bytes, env: Mapping[str, str], timeout: float) -> tuple[int, bytes, bytes]:
    """The production :class:`Exec`: its own session, whole group killed at the timeout."""
    return exec_argv([plugin], stdin, env, timeout)


PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = None


def _die_with_parent(parent: int) -> Callable[[], None]:
    """The child's set-up before exec: SIGKILL once the thread that started it ends
    (``prctl(PR_SET_PDEATHSIG)``, kept across exec), and at once if it already has."""
    global _prctl
    if _prctl is None:
        import ctypes  # only here: a delegate is about to run anyway

        _prctl = ctypes.CDLL(None, use_errno=True).prctl

    prctl = _prctl

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return setup


_SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
_PDEATHSIG_ARGV: tuple[str, ...] = (_SETPRIV, "--pdeathsig", "KILL", "--") if _SETPRIV else ()


def _can_exec(program: str) -> None:
    """The OSError CPython's own exec would raise for ``program`` (missing, not executable,
    no ELF or ``#!`` header), raised before setpriv would meet it where it is worded otherwise."""
    try:
        with open(program, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise type(err)(err.errno, os.strerror(err.errno or errno.ENOENT), program) from None
    if not os.access(program, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    if not (head.startswith(b"\x7fELF") or head.startswith(b"#!")):
        raise OSError(errno.ENOEXEC, os.strerror(errno.ENOEXEC), program)


def exec_argv(argv: Sequence[str], stdin: bytes, env: Mapping[str, str], timeout: float) -> tuple[int, bytes, bytes]:
    """Run ``argv`` as :func:`subprocess_exec` runs a plugin (for wrappers such as
    ``ip netns exec <ns> <plugin>``); raises :class:`ExecTimeout` naming ``argv[-1]``.

    Under a :class:`CallGuard` (the thread's call) the plugin inherits the guard's lock
    and its process group is recorded while it runs; a cancelled guard refuses to start
    anything but DEL and VERSION (the rollback) and reports the end of any other command
    as :class:`Interrupted`."""
    guard = current_guard()
    command = env.get("CNI_COMMAND", "")
    if guard is not None:
        guard.may_start(command)
    # PR_SET_PDEATHSIG through util-linux's setpriv, exec'd in front of the plugin: with no
    # preexec_fn CPython starts the child with vfork, which in a large (daemon) process costs
    # a third of a fork (docs/bench/meta_cni_profile.md); without setpriv, the preexec_fn
    if _PDEATHSIG_ARGV and "/" in argv[0]:  # a bare name is looked up on PATH by setpriv
        _can_exec(argv[0])
    proc = subprocess.Popen(
        [*_PDEATHSIG_ARGV, *argv] if _PDEATHSIG_ARGV else list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        start_new_session=True,
        close_fds=True,
        pass_fds=guard.inherited_fds() if guard is not None else (),
        preexec_fn=None if _PDEATHSIG_ARGV else _die_with_parent(os.getpid()),
    )
    if guard is not None:
        guard.started(proc.pid, command)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise ExecTimeout(argv[-1], timeout) from None
    except BaseException:
        _kill(proc)
        raise
    finally:
        if guard is not None:
            guard.ended(proc.pid)
    if guard is not None:
        guard.may_go_on(command)
    return proc.returncode, out, err


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the plugin's process group, then reap it without hanging on stray pipes."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        # A grandchild that left the group still holds the pipes: stop reading them.
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.kill()
        proc.wait()


def _text(blob: bytes) -> str:
    text = blob.decode("utf-8", errors="replace").strip()
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "..."


class PluginFailed(DelegateFailed):
    """A plugin that answered with a failure. ``msg`` is kvnet's (it names the plugin and
    the command); ``cni_msg`` is the ``msg`` of the ``types.Error`` libcni makes of the
    failure, and ``libcni_msg`` that error's text (``msg; details``, named after the
    plugin of a list as libcni's list calls do), which Multus puts in its messages
    (:func:`libcni_text`)."""

    def __init__(
        self, msg: str, details: str = "", code: int | None = None, *, cni_msg: str = "", libcni_msg: str = ""
    ) -> None:  # defaults: copy.copy rebuilds an exception from its args, then its __dict__
        super().__init__(msg, details, code)
        self.cni_msg = cni_msg
        self.libcni_msg = libcni_msg


def libcni_text(err: KvnetError) -> str:
    """What libcni's error says for ``err``: a plugin's failure as libcni reports it (see
    :class:`PluginFailed`), any other error's own message."""
    return err.libcni_msg if isinstance(err, PluginFailed) else err.msg


def _go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _libcni_error(status: int, stdout: bytes, stderr: bytes) -> tuple[str, str]:
    """invoke's ``RawExec.pluginErr``: the ``types.Error`` libcni makes of a failed plugin,
    as (``msg``, its ``Error()`` text): the error JSON on stdout (``msg; details``), else
    libcni's ``netplugin failed`` texts."""
    out = stdout.decode("utf-8", errors="replace")
    if not stdout:
        if not stderr:
            name = signal.strsignal(-status) if status < 0 else None
            how = f"signal: {name[:1].lower()}{name[1:]}" if name else ""
            msg = f"netplugin failed with no error message: {how or f'exit status {status}'}"
        else:
            msg = f"netplugin failed: {_go_quote(stderr.decode('utf-8', errors='replace'))}"
        return msg, msg
    try:
        obj = json.loads(stdout)
    except (ValueError, UnicodeDecodeError) as err:
        msg = f"netplugin failed but error parsing its diagnostic message {_go_quote(out)}: {err}"
        return msg, msg
    if not isinstance(obj, dict):
        msg = f"netplugin failed but error parsing its diagnostic message {_go_quote(out)}: not a JSON object"
        return msg, msg
    text = obj.get("msg")
    msg = text if isinstance(text, str) else ""
    more = obj.get("details")
    details = more if isinstance(more, str) else ""
    return msg, f"{msg}; {details}" if details else msg


def delegate_error(plugin_type: str, command: str, status: int, stdout: bytes, stderr: bytes) -> DelegateFailed:
    """A failed plugin's error: its CNI error JSON (stdout, else stderr), else its raw text."""
    cni_msg, libcni_msg = _libcni_error(status, stdout, stderr)
    for blob in (stdout, stderr):
        text = blob.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(obj, dict) and ("msg" in obj or "code" in obj):
            code = obj.get("code")
            msg = str(obj.get("msg") or f"error code {code}")
            details = obj.get("details") or ""
            good_code = code if isinstance(code, int) and not isinstance(code, bool) and code > 0 else None
            return PluginFailed(
                f'plugin type="{plugin_type}" failed ({command.lower()}): {msg}',
                str(details),
                code=good_code,
                cni_msg=cni_msg,
                libcni_msg=libcni_msg,
            )
    raw = _text(stdout) or _text(stderr)
    if not raw:
        raw = f"killed by signal {-status}" if status < 0 else f"exited with status {status} and no message"
    return PluginFailed(
        f'plugin type="{plugin_type}" failed ({command.lower()}): {raw}', cni_msg=cni_msg, libcni_msg=libcni_msg
    )


def _plugin_conf_list(network: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if "plugins" not in network:
        return [network]
    plugins = network["plugins"]
    if not isinstance(plugins, list) or not plugins or not all(isinstance(p, Mapping) for p in plugins):
        raise InvalidConfig(f'network {network.get("name")!r}: "plugins" must be a non-empty list of objects')
    return plugins


class DelegateRunner:
    """Finds and runs delegate plugins with libcni's semantics (see docs/cni-protocol.md)."""

    def __init__(
        self,
        bin_dirs: Sequence[str],
        *,
        timeout: float = 60.0,
        exec: Exec | None = None,
        cache_dir: str | None = None,
        versions_file: str | None = None,
    ) -> None:
        """``versions_file`` (optional) keeps the VERSION answers across processes, so a
        short-lived CNI binary asks each plugin binary once per install, not once per call."""
        self.bin_dirs = tuple(d for d in bin_dirs if d)
        self.timeout = timeout
        self.exec: Exec = exec if exec is not None else subprocess_exec
        self.cache_dir = cache_dir
        self.versions_file = versions_file
        self._versions: dict[tuple[str, str], tuple[str, ...]] = {}
        self._stored: dict[str, Any] | None = None
        self.observer: PluginObserver | None = None  # told (type, command, seconds, timed out) of each run

    # --- lookup and negotiation ---------------------------------------------------

    def search_path(self, extra_path: Sequence[str] = ()) -> tuple[str, ...]:
        """binDir(s), then CNI_PATH, then /usr/lib/cni; duplicates dropped, order kept."""
        return tuple(dict.fromkeys([*self.bin_dirs, *(p for p in extra_path if p), FALLBACK_BIN_DIR]))

    def find(self, plugin_type: str, extra_path: Sequence[str] = ()) -> str:
        """The executable for ``plugin_type``; a type that is a path is refused."""
        if not isinstance(plugin_type, str) or not plugin_type:
            raise InvalidConfig('delegate config has no "type"')
        if "/" in plugin_type or ".." in plugin_type or plugin_type.startswith("."):
            raise InvalidConfig(f"invalid plugin type {plugin_type!r}: must be a plain file name")
        dirs = self.search_path(extra_path)
        for d in dirs:
            candidate = os.path.join(d, plugin_type)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        raise InvalidConfig(f"failed to find plugin {plugin_type!r} in path [{' '.join(dirs)}]")

    def plugin_versions(self, plugin: str, plugin_type: str, extra_path: Sequence[str] = ()) -> tuple[str, ...]:
        """The versions a plugin binary speaks (its VERSION answer), asked once per binary
        (per path, inode, size and modification time: a replaced binary is asked again)."""
        try:
            st = os.stat(plugin)
            stamp = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = ""
        key = (plugin, stamp)
        known = self._versions.get(key) or self._stored_versions(plugin, stamp)
        if known is not None:
            self._versions[key] = known
            return known
        env = {
            "CNI_COMMAND": "VERSION",
            "CNI_PATH": ":".join(self.search_path(extra_path)),
            "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        }
        stdin = json.dumps({"cniVersion": ALL_VERSIONS[-1]}).encode()
        status, out, err = self._call(plugin, plugin_type, "VERSION", stdin, env)
        if status != 0:
            failure = delegate_error(plugin_type, "VERSION", status, out, err)
            if "unknown CNI_COMMAND: VERSION" in failure.msg:
                versions: tuple[str, ...] = ("0.1.0",)
            else:
                raise failure
        else:
            versions = self._decode_versions(plugin_type, out)
        self._versions[key] = versions
        self._store_versions(plugin, stamp, versions)
        log.debug("delegate %s (%s) speaks CNI %s", plugin_type, plugin, ", ".join(versions))
        return versions

    def _stored_versions(self, plugin: str, stamp: str) -> tuple[str, ...] | None:
        if not self.versions_file or not stamp:
            return None
        if self._stored is None:
            try:
                with open(self.versions_file, "rb") as f:
                    loaded = json.load(f)
            except (OSError, ValueError):
                loaded = {}
            self._stored = loaded if isinstance(loaded, dict) else {}
        entry = self._stored.get(plugin)
        if isinstance(entry, dict) and entry.get("stamp") == stamp:
            versions = entry.get("versions")
            if isinstance(versions, list) and versions and all(isinstance(v, str) for v in versions):
                return tuple(versions)
        return None

    def _store_versions(self, plugin: str, stamp: str, versions: tuple[str, ...]) -> None:
        """Best effort: a file that cannot be written only costs a VERSION call next time."""
        if not self.versions_file or not stamp:
            return
        stored = dict(self._stored or {})
        stored[plugin] = {"stamp": stamp, "versions": list(versions)}
        self._stored = stored
        tmp = f"{self.versions_file}.tmp{os.getpid()}.{threading.get_ident()}"  # one per thread: delegates run at once
        try:
            os.makedirs(os.path.dirname(self.versions_file) or ".", mode=0o700, exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(stored, f)
            os.replace(tmp, self.versions_file)
        except OSError as e:
            log.warning("cannot keep plugin versions in %s: %s", self.versions_file, e)
            try:
                os.unlink(tmp)
            except OSError:
                pass

    @staticmethod
    def _decode_versions(plugin_type: str, out: bytes) -> tuple[str, ...]:
        try:
            info = json.loads(out)
        except (ValueError, UnicodeDecodeError):
            raise DecodeFailure(f"delegate {plugin_type} VERSION: unparseable answer {_text(out)!r}") from None
        if not isinstance(info, dict):
            raise DecodeFailure(f"delegate {plugin_type} VERSION: answer is not a JSON object")
        supported = info.get("supportedVersions")
        if isinstance(supported, list) and supported and all(isinstance(v, str) for v in supported):
            return tuple(supported)
        if info.get("cniVersion") == "0.1.0":
            return ("0.1.0",)
        raise DecodeFailure(f"delegate {plugin_type} VERSION: decoding version info: missing field supportedVersions")

    def negotiate(self, plugin: str, plugin_type: str, conf_version: str, extra_path: Sequence[str] = ()) -> str:
        """The version to send: the config's when the plugin speaks it, else the highest
        common one below it, else the lowest common one above it."""
        if conf_version not in ALL_VERSIONS:
            raise IncompatibleVersion(
                f"delegate {plugin_type}: unsupported cniVersion {conf_version!r}",
                f"supported versions: {', '.join(ALL_VERSIONS)}",
            )
        theirs = self.plugin_versions(plugin, plugin_type, extra_path)
        common = [v for v in ALL_VERSIONS if v in theirs]
        if conf_version in common:
            return conf_version
        want = version_key(conf_version)
        lower = [v for v in common if version_key(v) < want]
        if lower:
            return lower[-1]
        if common:
            return common[0]
        raise IncompatibleVersion(
            f"delegate {plugin_type} does not support config version {conf_version!r}",
            f"plugin supports {', '.join(theirs)}",
        )

    # --- one plugin ---------------------------------------------------------------

    def _env(self, command: str, env: DelegateEnv) -> dict[str, str]:
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": env.container_id,
            "CNI_NETNS": env.netns,
            "CNI_IFNAME": env.ifname,
            "CNI_ARGS": env.args,
            "CNI_PATH": ":".join(self.search_path(env.path)),
            "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        }

    def _call(
        self, plugin: str, plugin_type: str, command: str, stdin: bytes, env: Mapping[str, str]
    ) -> tuple[int, bytes, bytes]:
        start = time.monotonic()
        timed_out = False
        try:
            return self.exec(plugin, stdin, env, self.timeout)
        except ExecTimeout:
            timed_out = True
            raise DelegateFailed(
                f'plugin type="{plugin_type}" failed ({command.lower()}): timed out after {self.timeout:g}s and was killed'
            ) from None
        except OSError as e:
            raise DelegateFailed(
                f'plugin type="{plugin_type}" could not be run ({command.lower()}, {plugin}): {e}'
            ) from None
        finally:
            if self.observer is not None:
                self.observer(plugin_type, command, time.monotonic() - start, timed_out)

    def run(self, command: str, conf: Mapping[str, Any], env: DelegateEnv) -> dict[str, Any] | None:
        """Run one plugin conf (it has ``type``); the ADD result comes back in the conf's version.

        CHECK for a plugin below 0.4.0 and STATUS/GC for a plugin below 1.1.0 are skipped
        (None): the plugin has no such command, so there is nothing it could report.
        """
        plugin_type = conf.get("type")
        if not isinstance(plugin_type, str) or not plugin_type:
            raise InvalidConfig(f'delegate config for network {conf.get("name")!r} has no "type"')
        plugin = self.find(plugin_type, env.path)
        conf_version = conf.get("cniVersion") or "0.1.0"
        if not isinstance(conf_version, str):
            raise InvalidConfig(f"delegate {plugin_type}: cniVersion must be a string")
        send_version = self.negotiate(plugin, plugin_type, conf_version, env.path)
        floor = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}.get(command)
        if floor and version_key(send_version) < version_key(floor):
            log.debug("delegate %s speaks CNI %s: %s skipped", plugin_type, send_version, command)
            return None
        sent = dict(conf)
        sent["cniVersion"] = send_version
        prev = conf.get("prevResult")
        if prev and version_key(send_version) >= (0, 3, 0):
            sent["prevResult"] = convert_result(prev, send_version, from_version=conf_version)
        else:
            sent.pop("prevResult", None)
        stdin = json.dumps(sent).encode()
        log.debug(
            "delegate %s %s container=%s ifname=%s as CNI %s",
            plugin_type,
            command,
            env.container_id,
            env.ifname,
            send_version,
        )
        status, out, err = self._call(plugin, plugin_type, command, stdin, self._env(command, env))
        if status != 0:
            raise delegate_error(plugin_type, command, status, out, err)
        if command != "ADD":
            return None
        if not out.strip():
            raise DecodeFailure(f"delegate {plugin_type} ADD returned no result")
        try:
            result = json.loads(out)
        except (ValueError, UnicodeDecodeError):
            raise DecodeFailure(f"delegate {plugin_type} ADD returned an unparseable result: {_text(out)!r}") from None
        if not isinstance(result, dict):
            raise DecodeFailure(f"delegate {plugin_type} ADD returned a result that is not a JSON object")
        if "code" in result and "msg" in result and not _RESULT_KEYS & result.keys():
            # an error object with exit status 0: still an error
            raise delegate_error(plugin_type, command, status, out, b"")
        return convert_result(result, conf_version, from_version=send_version)

    # --- a whole network (conf or conflist) ---------------------------------------

    def run_network(
        self,
        command: str,
        network: Mapping[str, Any],
        env: DelegateEnv,
        *,
        runtime_config: Mapping[str, Any] | None = None,
        prev_result: Mapping[str, Any] | None = None,
        valid_attachments: Sequence[Mapping[str, str]] | None = None,
    ) -> dict[str, Any] | None:
        """ADD/DEL/CHECK/STATUS/GC of one network with libcni's list semantics.

        ``network`` is a plugin conf or a conflist (``plugins``). ADD runs the plugins in
        order, each getting the previous result; DEL runs them in reverse with the cached
        result; CHECK in order with the cached result. ``runtime_config`` reaches a plugin
        only for the capabilities it declares. ``valid_attachments`` (GC only) lists the
        ``{"containerID", "ifname"}`` pairs that must survive.
        """
        name = network.get("name")
        if not isinstance(name, str) or not cni_name_ok(name):
            raise InvalidConfig(
                "invalid characters found in network name" if name else "missing network name", str(name or "")
            )
        version = network.get("cniVersion") or "0.1.0"
        if not isinstance(version, str) or version not in ALL_VERSIONS:
            raise IncompatibleVersion(f"network {name!r}: unsupported cniVersion {version!r}")
        plugins = _plugin_conf_list(network)
        rc = runtime_config or {}
        prev = convert_result(prev_result, version) if prev_result else None

        is_list = "plugins" in network
        if command == "ADD":
            # libcni's addNetwork checks these before running anything
            validate_container_id(env.container_id)
            validate_ifname(env.ifname)
            result = prev
            for p in plugins:
                with _as_libcni_list(is_list, p, "add"):
                    out = self.run("ADD", _build(p, name, version, result, rc), env)
                if out is not None:
                    result = out
            final = result if result is not None else {"cniVersion": version}
            if self.cache_dir:
                self._cache_write(network, name, env, rc, final)
            return final

        if command == "DEL":
            cached, cached_caps = self._cached(name, version, env)
            if version_key(version) < (0, 4, 0):
                cached = prev = None
            rc_del = rc if runtime_config is not None else cached_caps
            for p in reversed(plugins):
                with _as_libcni_list(is_list, p, "delete"):
                    self.run("DEL", _build(p, name, version, cached if cached is not None else prev, rc_del), env)
            if self.cache_dir:
                libcni_cache.delete_result(self.cache_dir, name, env.container_id, env.ifname)
            return None

        if command == "CHECK":
            if version_key(version) < (0, 4, 0):
                raise IncompatibleVersion(f'configuration version "{version}" does not support the CHECK command')
            cached, _ = self._cached(name, version, env)
            for p in plugins:
                self.run("CHECK", _build(p, name, version, cached if cached is not None else prev, rc), env)
            return None

        if command == "STATUS":
            if version_key(version) < (1, 1, 0):
                return None
            for p in plugins:
                self.run("STATUS", _build(p, name, version, None, {}), env)
            return None

        if command == "GC":
            self._gc(network, name, version, plugins, env, valid_attachments or ())
            return None

        raise InvalidConfig(f"unknown CNI command {command!r} for network {name!r}")

    def _cached(self, name: str, version: str, env: DelegateEnv) -> tuple[dict[str, Any] | None, Mapping[str, Any]]:
        """The cached result in ``version`` and the cached capability args (or None, {})."""
        if not self.cache_dir:
            return None, {}
        att = libcni_cache.read_result(self.cache_dir, name, env.container_id, env.ifname)
        if att is None:
            return None, {}
        result = None
        if att.result:
            try:
                result = convert_result(att.result, version)
            except KvnetError as e:
                log.warning("network %s container %s: cached result unusable: %s", name, env.container_id, e.msg)
        return result, att.capability_args

    def _cache_write(
        self, network: Mapping[str, Any], name: str, env: DelegateEnv, rc: Mapping[str, Any], result: Mapping[str, Any]
    ) -> None:
        libcni_cache.write_result(
            self.cache_dir or "",
            libcni_cache.CachedAttachment(
                network_name=name,
                container_id=env.container_id,
                ifname=env.ifname,
                config=json.dumps(network).encode(),
                netns=env.netns,
                cni_args=libcni_cache.args_pairs(env.args),
                capability_args=dict(rc),
                result=result,
            ),
        )

    def _gc(
        self,
        network: Mapping[str, Any],
        name: str,
        version: str,
        plugins: Sequence[Mapping[str, Any]],
        env: DelegateEnv,
        valid: Sequence[Mapping[str, str]],
    ) -> None:
        """libcni's ``GCNetworkList``: DEL every cached attachment of this network that is
        not valid, then send GC (1.1.0) to each plugin with the valid attachments as given,
        under ``cni.dev/valid-attachments`` and the misnamed ``cni.dev/attachments`` (CNI
        #1101); all errors are collected and joined with newlines as ``errors.Join`` does,
        the first one's code raised."""
        errors: list[tuple[KvnetError, str]] = []
        listed = [{"containerID": str(a.get("containerID", "")), "ifname": str(a.get("ifname", ""))} for a in valid]
        keep = {(a["containerID"], a["ifname"]) for a in listed}
        if self.cache_dir:
            for att in libcni_cache.list_attachments(self.cache_dir):
                if att.network_name != name or (att.container_id, att.ifname) in keep:
                    continue
                stale = DelegateEnv(
                    att.container_id, att.netns, att.ifname, ";".join(f"{k}={v}" for k, v in att.cni_args), env.path
                )
                try:
                    self.run_network("DEL", network, stale, runtime_config=att.capability_args)
                except KvnetError as e:
                    errors.append(
                        (e, f"failed to delete stale attachment {att.container_id} {att.ifname}: {libcni_text(e)}")
                    )
        if version_key(version) >= (1, 1, 0):
            for p in plugins:
                conf = _build(p, name, version, None, {})
                conf["cni.dev/valid-attachments"] = listed
                conf["cni.dev/attachments"] = listed
                try:
                    self.run("GC", conf, env)
                except KvnetError as e:
                    errors.append((e, f"failed to GC plugin {p.get('type')}: {libcni_text(e)}"))
        if errors:
            first = errors[0][0]
            raise DelegateFailed("\n".join(msg for _, msg in errors), first.details, code=first.cni_code)


@contextlib.contextmanager
def _as_libcni_list(is_list: bool, plugin: Mapping[str, Any], what: str) -> Iterator[None]:
    """libcni's ``AddNetworkList`` / ``DelNetworkList`` name the failed plugin of a list:
    ``plugin type="bridge" failed (add): ...`` (with ``name="..."`` when the plugin has one)."""
    try:
        yield
    except PluginFailed as err:
        if is_list:
            desc = f"type={_go_quote(str(plugin.get('type') or ''))}"
            if isinstance(plugin.get("name"), str) and plugin["name"]:
                desc += f" name={_go_quote(plugin['name'])}"
            err.libcni_msg = f"plugin {desc} failed ({what}): {err.libcni_msg}"
        raise


def _build(
    plugin: Mapping[str, Any], name: str, version: str, prev: Mapping[str, Any] | None, rc: Mapping[str, Any]
) -> dict[str, Any]:
    """One plugin's stdin: the list's name and version injected, prevResult, and the
    runtimeConfig keys this plugin declared as capabilities (libcni's buildOneConfig)."""
    conf = dict(plugin)
    conf["name"] = name
    conf["cniVersion"] = version
    if prev is not None:
        conf["prevResult"] = prev
    caps = plugin.get("capabilities")
    if isinstance(caps, Mapping) and rc:
        runtime = {k: rc[k] for k, on in caps.items() if on is True and k in rc}
        if runtime:
            conf["runtimeConfig"] = runtime
    return conf


# ------------------------------------------------------------------------------------
# one call's hold on its container (docs/reliability.md)
# ------------------------------------------------------------------------------------


class Interrupted(TryAgainLater):
    """The call was stopped (SIGTERM or SIGINT of kvnet-cni, the daemon's drain bound
    ran out) and what it had set up was undone (code 11: the runtime may try again)."""


_UNDOING = ("DEL", "VERSION")  # what a cancelled call still runs: its rollback
LOCK_FOLDER = ".kvnet-locks"  # under the cache folder (cniDir)
ORPHAN_GRACE = 5.0  # seconds for orphaned delegates to die after they are killed
LOCK_POLL = 0.02

_local = threading.local()
calls_begun = 0  # guards acquired by this process (a signal after the last one ended is ignored)
_active: set[CallGuard] = set()
_active_lock = threading.Lock()


def current_guard() -> CallGuard | None:
    """The guard of the call this thread runs, if any."""
    guard: CallGuard | None = getattr(_local, "guard", None)
    return guard


@contextlib.contextmanager
def acting_for(guard: CallGuard | None) -> Iterator[None]:
    """Run the body in this thread on behalf of ``guard``, the call of another thread (a
    worker of the meta-plugin's parallel delegates): the delegates it starts inherit the
    call's lock and are recorded and killed with the call's, as in the call's own thread.
    The thread's previous guard is back afterwards. The guard itself stays the calling
    thread's: only that thread acquires and releases it."""
    previous = getattr(_local, "guard", None)
    _local.guard = guard
    try:
        yield
    finally:
        _local.guard = previous


def handle_signals(handler: Callable[[int, Any], None], signals: Sequence[int]) -> None:
    """Install ``handler`` for ``signals`` in this process only: a child forked without an
    exec (pyroute2's netns helper, under the in-process binding) gets the default action
    back, so a SIGTERM its parent sends it ends it instead of running this process's call
    logic (a rollback, a drain) in the copy."""
    for sig in signals:
        signal.signal(sig, handler)
    os.register_at_fork(after_in_child=lambda: [signal.signal(sig, signal.SIG_DFL) for sig in signals])


def cancel_all(reason: str) -> bool:
    """Cancel every call in flight (:meth:`CallGuard.cancel`); True when this thread's call
    may stop where it is now (it is active, not running a delegate, not already cancelled
    and not releasing its lock): a signal handler then raises :class:`Interrupted`."""
    with _active_lock:
        guards = list(_active)
    mine = current_guard()
    stop_here = mine is not None and mine.command != "DEL" and not mine.cancelled and not mine.busy
    for g in guards:
        g.cancel(reason)
    return stop_here


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22),
    "" when there is no such process: a pid and its start time name one process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return ""
    fields = stat.rpartition(b")")[2].split()
    return fields[19].decode() if len(fields) > 19 else ""


def _orphans(container_id: str, groups: Sequence[int]) -> list[int]:
    """Processes in one of ``groups`` whose environment names ``container_id``."""
    mark = f"CNI_CONTAINERID={container_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rpartition(b")")[2].split()
            if int(fields[2]) not in groups:
                continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if mark in fh.read().split(b"\0"):
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


class CallGuard:
    """One CNI call's hold on its container: an exclusive ``flock`` on
    ``<cniDir>/.kvnet-locks/<container ID>`` for the whole call, and the delegates it runs.

    Every delegate inherits the locked descriptor, so when kvnet is killed the lock stays
    held exactly as long as one of its delegates (or their children, such as an IPAM
    plugin) still runs. The file names the holder (pid and start time) and the process
    groups of the delegates running now. The next call for the container (the runtime's
    DEL, a retried ADD) takes the lock before it does anything:

    - held by a process that is gone: the delegates it left (the recorded groups, checked
      by their ``CNI_CONTAINERID``) are killed, and the lock is waited for
      ``ORPHAN_GRACE`` seconds;
    - held by a live process (an ADD still running in another ``kvnet-cni`` or in the
      daemon): it is waited for up to ``wait`` seconds, so a DEL runs after that ADD and
      undoes it.

    Either wait running out is :class:`~kvnet.core.errors.TryAgainLater` (the runtime
    retries). :meth:`cancel` stops the call: the running delegates are killed, nothing
    but DEL (and VERSION) starts from then on. The lock file is removed when the call ends.
    """

    def __init__(self, cni_dir: str, container_id: str, *, wait: float, command: str = "ADD") -> None:
        name = container_id
        if len(container_id) > 200:  # a file name has 255 bytes at most
            import hashlib  # only here: 4 ms on the hot path otherwise

            name = hashlib.sha256(container_id.encode()).hexdigest()
        self.path = os.path.join(cni_dir, LOCK_FOLDER, name)
        self.container_id = container_id
        self.command = command
        self.wait = wait
        self.cancelled = ""  # the reason, once cancelled
        self.releasing = False
        self._fd: int | None = None
        self._groups: dict[int, str] = {}  # process group -> its CNI command
        # Reentrant: a signal handler (cancel) may run in a thread that holds it.
        self._mutex = threading.RLock()
        self._owner = (os.getpid(), _start_time(os.getpid()))

    @property
    def busy(self) -> bool:
        """A delegate runs or the lock is being let go: not a point to stop at."""
        return bool(self._groups) or self.releasing

    def inherited_fds(self) -> tuple[int, ...]:
        return (self._fd,) if self._fd is not None else ()

    # --- the lock ---------------------------------------------------------------------

    def __enter__(self) -> CallGuard:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        deadline: float | None = None
        killed = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self._holder()
                alive = holder is not None and _start_time(holder[0]) == holder[1] and holder[1] != ""
                if holder is not None and not alive and not killed:
                    self._kill_orphans(holder[2])
                    killed = True
                    deadline = time.monotonic() + ORPHAN_GRACE
                if deadline is None:
                    deadline = time.monotonic() + (self.wait if alive or holder is None else ORPHAN_GRACE)
                    if alive:
                        log.info("container %s: waiting for the call of pid %d to end", self.container_id, holder[0])  # type: ignore[index]
                if time.monotonic() >= deadline:
                    who = f"pid {holder[0]}" if holder is not None else "another call"
                    raise TryAgainLater(
                        f"container {self.container_id}: {who} still holds {self.path} "
                        f"after {self.wait if alive else ORPHAN_GRACE:g}s"
                    ) from None
                time.sleep(LOCK_POLL)
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # removed by the call before us after we opened it: open it again
                os.close(fd)
                continue
            break
        self._fd = fd
        self._write()
        global calls_begun
        calls_begun += 1
        with _active_lock:
            _active.add(self)
        _local.guard = self

    def release(self) -> None:
        """Let the lock go and remove its file (the next call makes a new one)."""
        self.releasing = True
        try:
            if getattr(_local, "guard", None) is self:
                _local.guard = None
            with _active_lock:
                _active.discard(self)
            with self._mutex:  # no _write of another thread is then on the descriptor
                fd, self._fd = self._fd, None
            if fd is None:
                return
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(fd)
        finally:
            self.releasing = False

    def _holder(self) -> tuple[int, str, list[int]] | None:
        try:
            with open(self.path, "rb") as fh:
                doc = json.loads(fh.read() or b"null")
            return int(doc["pid"]), str(doc["start"]), [int(g) for g in doc["groups"]]
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def _write(self) -> None:
        # The snapshot and the write under one lock: delegates of one call that run at once
        # (parallel delegates, each started and ended in its own thread) write here
        # concurrently. Snapshotted under the lock but written outside it, an older snapshot
        # could land after a newer one (the file then misses a running delegate, which the
        # next call would not kill as an orphan), and two pwrite/ftruncate pairs could
        # interleave into a torn file (no holder at all). Under it, the last write is of the
        # state after the last change.
        with self._mutex:
            if self._fd is None:
                return
            data = json.dumps({"pid": self._owner[0], "start": self._owner[1], "groups": sorted(self._groups)}).encode()
            try:
                os.pwrite(self._fd, data, 0)
                os.ftruncate(self._fd, len(data))
            except OSError as err:
                log.warning(
                    "container %s: cannot record the running delegates in %s: %s", self.container_id, self.path, err
                )

    def _kill_orphans(self, groups: Sequence[int]) -> None:
        for pid in _orphans(self.container_id, groups):
            log.warning("container %s: killing pid %d, a delegate left by a call that is gone", self.container_id, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # --- the delegates ----------------------------------------------------------------

    def may_start(self, command: str) -> None:
        if self.cancelled and command not in _UNDOING:
            raise Interrupted(f"{self.cancelled}: the call stopped before running its next delegate")

    def may_go_on(self, command: str) -> None:
        if self.cancelled and command not in _UNDOING:
            raise Interrupted(f"{self.cancelled}: the call stopped its delegates")

    def started(self, pid: int, command: str) -> None:
        with self._mutex:
            self._groups[pid] = command
        self._write()
        if self.cancelled and command not in _UNDOING:
            self._kill_group(pid)

    def ended(self, pid: int) -> None:
        with self._mutex:
            self._groups.pop(pid, None)
        self._write()

    def cancel(self, reason: str) -> None:
        """Stop the call: its running delegates are killed, and only DEL starts from now on.
        A DEL is left to finish (it only removes, and is bounded by the delegate timeout)."""
        if self.cancelled:
            return
        self.cancelled = reason
        if self.command == "DEL":
            return
        with self._mutex:
            groups = [pgid for pgid, command in self._groups.items() if command not in _UNDOING]
        for pgid in groups:
            self._kill_group(pgid)

    def _kill_group(self, pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError as err:
            if err.errno != errno.ESRCH:
                log.warning("container %s: cannot kill delegate group %d: %s", self.container_id, pgid, err)
