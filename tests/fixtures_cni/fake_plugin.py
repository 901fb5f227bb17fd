"""A configurable fake CNI plugin for the delegate tests.

Run as ``python fake_plugin.py <settings.json>`` through a small wrapper script that the
tests write into a temporary bin dir (the wrapper's file name is the plugin "type").
Settings (all optional): ``versions`` (what VERSION answers), ``no_version`` (answer
VERSION like a pre-0.2 plugin), ``modes`` ({command: mode}), ``result`` (the ADD result to
print), ``record`` (a file to append one JSON line per call: command, CNI_* env, stdin).
Modes: ok, error-stdout, error-stderr, garbage-stdout, garbage-stderr, silent-fail,
bad-json-result, empty-result, no-version-result, hang, hang-escape, signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def default_result(version: str, ifname: str, netns: str) -> dict:
    if version in ("0.1.0", "0.2.0"):
        return {
            "cniVersion": version,
            "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}]},
            "dns": {},
        }
    ip: dict = {"interface": 0, "address": "10.1.2.3/24", "gateway": "10.1.2.1"}
    if version.startswith("0."):
        ip = {"version": "4", **ip}
    return {
        "cniVersion": version,
        "interfaces": [{"name": ifname, "mac": "0a:58:0a:01:02:03", "sandbox": netns}],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}],
        "dns": {},
    }


def main() -> int:
    with open(sys.argv[1]) as f:
        settings = json.load(f)
    command = os.environ.get("CNI_COMMAND", "")
    stdin = sys.stdin.buffer.read()
    record = settings.get("record")
    mode = settings.get("modes", {}).get(command, "ok")
    child_pid = None
    if mode in ("hang", "hang-escape"):
        # hang-escape: the child leaves the process group and keeps our stdout open
        child = subprocess.Popen(["sleep", "300"], start_new_session=(mode == "hang-escape"))
        child_pid = child.pid
    if record:
        with open(record, "a") as f:
            f.write(
                json.dumps(
                    {
                        "command": command,
                        "env": {k: v for k, v in os.environ.items() if k.startswith("CNI_") or k == "PATH"},
                        "env_keys": sorted(os.environ),
                        "stdin": stdin.decode(),
                        "pid": os.getpid(),
                        "child_pid": child_pid,
                    }
                )
                + "\n"
            )
    versions = settings.get("versions", ["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
    if command == "VERSION":
        if settings.get("no_version"):
            print(json.dumps({"code": 4, "msg": "unknown CNI_COMMAND: VERSION"}))
            return 1
        print(json.dumps({"cniVersion": versions[-1], "supportedVersions": versions}))
        return 0
    conf = json.loads(stdin)
    if conf.get("cniVersion") not in versions:
        print(
            json.dumps(
                {"code": 1, "msg": "incompatible CNI versions", "details": f"config is {conf.get('cniVersion')!r}"}
            )
        )
        return 1
    if mode == "error-stdout":
        print(
            json.dumps({"cniVersion": conf["cniVersion"], "code": 117, "msg": "fake failure", "details": "on stdout"})
        )
        return 1
    if mode == "error-stderr":
        sys.stderr.write(json.dumps({"code": 118, "msg": "fake failure on stderr"}))
        return 1
    if mode == "garbage-stdout":
        print("panic: something broke\ngoroutine 1 [running]")
        return 2
    if mode == "garbage-stderr":
        sys.stderr.write("plain words on stderr\n")
        return 3
    if mode == "silent-fail":
        return 4
    if mode == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode in ("hang", "hang-escape"):
        time.sleep(300)
        return 0
    if command != "ADD":
        return 0
    if mode == "bad-json-result":
        print("{not json")
        return 0
    if mode == "empty-result":
        return 0
    result = settings.get("result") or default_result(
        conf["cniVersion"], os.environ.get("CNI_IFNAME", ""), os.environ.get("CNI_NETNS", "")
    )
    if mode == "no-version-result":
        result = {k: v for k, v in result.items() if k != "cniVersion"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
