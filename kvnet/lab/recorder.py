"""A recording CNI bin dir: every delegate call leaves a record of what it was given.

:func:`install` links every plugin of a real plugin dir (bridge, host-local, portmap, ...)
to one small shell wrapper in a bin dir. Called under a plugin's name, the wrapper saves
the call's stdin and CNI_* environment in the current record folder and then execs the
real plugin on the same stdin and environment, so its output and exit status are the
plugin's own; a meta-plugin's calls, libcni's conflist chains and the IPAM calls a plugin
makes are all recorded, without a change to any config, for about 3 ms a call. VERSION
calls are recorded apart (``kind: "version"``): a meta-plugin may ask for versions
without that being a difference in what a delegate does.

``recorder`` (in Python) is a plugin of its own that answers from its config:

- ``failOn``: the commands that fail (``["ADD"]``; ``"fail": true`` is ``["ADD"]``),
  with code 7 and ``recorder told to fail``;
- ``hang``: seconds to sleep in ADD;
- ``result``: the ADD result to print (``$IFNAME`` and ``$NETNS`` in its strings are
  replaced), by default the prevResult when chained, else one interface named as
  ``CNI_IFNAME`` in ``CNI_NETNS``;
- ``deviceInfo``: an object written to ``runtimeConfig.CNIDeviceInfoFile`` on ADD (what
  sriov-cni does with the file the meta-plugin names);
- ``die``: the commands on which it kills itself with SIGKILL (a delegate that is killed);
- ``then``: a plugin of the same bin dir to become (exec) on the same stdin and
  environment, after sleeping ``slow[<command>]`` seconds: a slow real plugin; with
  ``fork: true`` a child does the sleeping and the exec while the recorder waits for it
  and passes on its exit status (a delegate whose own child keeps running when the
  delegate is killed, as an IPAM plugin under its main plugin).

The record folder is the path in ``<bin dir>/.record-dir`` (:func:`record_into`); without
it nothing is recorded.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

RECORD_DIR_FILE = ".record-dir"
RECORDER = "recorder"

SCRIPT = r"""#!{python} -IS
import json, os, sys, time

name = os.path.basename(sys.argv[0])
cmd = os.environ.get("CNI_COMMAND", "")
data = b"" if cmd == "VERSION" else sys.stdin.buffer.read()
try:
    conf = json.loads(data or b"{{}}")
except ValueError:
    conf = {{"unparsed": data.decode(errors="replace")}}
if not isinstance(conf, dict):
    conf = {{"unparsed": conf}}


def record():
    try:
        with open(os.path.join(os.path.dirname(sys.argv[0]), {record_file!r})) as fh:
            folder = fh.read().strip()
    except OSError:
        return
    if not folder:
        return
    base = os.path.join(folder, "%d-%d-%s-%s" % (time.time_ns(), os.getpid(), cmd or "-", name))
    with open(base + ".env", "w") as fh:
        fh.write("".join("%s=%s\n" % (k, v) for k, v in os.environ.items() if k.startswith("CNI_")))
    with open(base + (".version" if cmd == "VERSION" else ".stdin"), "wb") as fh:
        fh.write(data)


record()

version = conf.get("cniVersion") or "1.0.0"
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.1.0",
                      "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}}))
    sys.exit(0)
if cmd in (conf.get("die") or []):
    os.kill(os.getpid(), 9)
then = conf.get("then")
if then:
    def become():
        delay = (conf.get("slow") or {{}}).get(cmd, 0)
        if delay:
            time.sleep(float(delay))
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        os.dup2(r, 0)
        os.close(r)
        target = os.path.join(os.path.dirname(sys.argv[0]), then)
        os.execv(target, [target])
    if conf.get("fork"):
        child = os.fork()
        if child == 0:
            become()
        _, status = os.waitpid(child, 0)
        sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
    become()
fail_on = conf.get("failOn") or (["ADD"] if conf.get("fail") else [])
if cmd == "ADD" and conf.get("hang"):
    time.sleep(float(conf["hang"]))
if cmd in fail_on:
    print(json.dumps({{"cniVersion": version, "code": 7, "msg": "recorder told to fail"}}))
    sys.exit(1)
if cmd == "ADD":
    info = conf.get("deviceInfo")
    path = (conf.get("runtimeConfig") or {{}}).get("CNIDeviceInfoFile")
    if info and path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(info, fh)
    if "result" in conf:
        text = json.dumps(conf["result"])
        text = text.replace("$IFNAME", os.environ.get("CNI_IFNAME", "")).replace("$NETNS", os.environ.get("CNI_NETNS", ""))
        result = json.loads(text)
    elif isinstance(conf.get("prevResult"), dict):
        result = conf["prevResult"]
    else:
        result = {{"interfaces": [{{"name": os.environ.get("CNI_IFNAME", ""), "sandbox": os.environ.get("CNI_NETNS", "")}}],
                  "ips": [], "dns": {{}}}}
    result["cniVersion"] = version
    print(json.dumps(result))
"""


WRAPPER = """#!/bin/sh
# records the call (stdin, CNI_* env) into the folder named in .record-dir, then runs the real plugin
real={real_dir}/${{0##*/}}
folder=$(cat "${{0%/*}}/{record_file}" 2>/dev/null)
[ -n "$folder" ] || exec "$real"
base="$folder/$(date +%s%N)-$$-${{CNI_COMMAND:--}}-${{0##*/}}"
env | grep '^CNI_' > "$base.env"
if [ "$CNI_COMMAND" = VERSION ]; then : > "$base.version"; exec "$real"; fi
cat > "$base.stdin"
exec "$real" < "$base.stdin"
"""
WRAPPER_NAME = ".wrapper"


def install(bin_dir: Path, real_dir: str, python: str = sys.executable) -> None:
    """``bin_dir/recorder``, and a link to the recording wrapper per plugin in ``real_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / RECORDER
    script.write_text(SCRIPT.format(python=python, record_file=RECORD_DIR_FILE))
    script.chmod(0o755)
    wrapper = bin_dir / WRAPPER_NAME
    wrapper.write_text(WRAPPER.format(real_dir=real_dir, record_file=RECORD_DIR_FILE))
    wrapper.chmod(0o755)
    for plugin in sorted(os.listdir(real_dir)):
        link = bin_dir / plugin
        if plugin != RECORDER and not link.exists() and os.access(os.path.join(real_dir, plugin), os.X_OK):
            link.symlink_to(WRAPPER_NAME)


def record_into(bin_dir: Path, folder: Path | None) -> None:
    """Record the calls of ``bin_dir``'s plugins into ``folder`` from now on (None: stop)."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    (bin_dir / RECORD_DIR_FILE).write_text(str(folder) if folder is not None else "")


def records(folder: Path, *, versions: bool = False) -> list[dict[str, Any]]:
    """The records in ``folder`` in the order the calls started (VERSION calls only with
    ``versions=True``)."""
    if not folder.exists():
        return []
    out: list[dict[str, Any]] = []
    for env_file in sorted(folder.glob("*.env"), key=lambda p: [int(x) for x in p.name.split("-", 2)[:2]]):
        stem = env_file.name[: -len(".env")]
        plugin = stem.split("-", 3)[3]
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        stdin_file = folder / f"{stem}.stdin"
        if stdin_file.exists():
            raw = stdin_file.read_text(errors="replace")
            try:
                stdin: Any = json.loads(raw)
            except ValueError:
                stdin = {"unparsed": raw}
            out.append({"kind": "call", "plugin": plugin, "env": env, "stdin": stdin})
        elif versions:
            out.append({"kind": "version", "plugin": plugin, "env": env, "stdin": None})
    return out


def clear(folder: Path) -> None:
    """Forget the records in ``folder``."""
    if folder.exists():
        for path in folder.iterdir():
            path.unlink()
