"""hack/kind-kubevirt.sh cannot run here (no Docker engine): it is checked by bash -n and
shellcheck, and every repository manifest it applies is one tests/deploy applies to the
real kube-apiserver, by tests/deploy or (against KubeVirt's own CRDs) tests/peers/test_kubevirt_crds."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.deploy.test_manifests_real import MANIFESTS, REPO

SCRIPT = REPO / "hack/kind-kubevirt.sh"
KUBEVIRT_SCHEMA = {"deploy/kubevirt-cr-patch.yaml", "examples/vm-kvnet.yaml"}


def test_bash_parses_it() -> None:
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_shellcheck_is_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is in the Makefile's apt list"
    done = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


def test_every_manifest_it_applies_is_proven() -> None:
    used = set(re.findall(r"(?:-f|--patch-file) ((?:crds|deploy|examples)/[\w.-]+\.yaml)", SCRIPT.read_text()))
    assert used, "the script applies the repository's manifests"
    assert all((REPO / rel).is_file() for rel in used)
    assert used <= set(MANIFESTS) | KUBEVIRT_SCHEMA
