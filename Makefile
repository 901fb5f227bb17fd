# kvnet: set-up, tests and demo on a Debian 12 machine (run as root).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BUILD ?= build
PY := $(VENV)/bin/python
APT_PACKAGES := containernetworking-plugins iproute2 iptables nftables libvirt-daemon-system \
	libvirt-clients libvirt-dev libxml2-utils qemu-system-x86 busybox-static pkg-config gcc \
	cpio python3-venv python3-dev dhcpcd-base shellcheck curl

PEERS ?= $(BUILD)/peers

.PHONY: setup apt venv guest peers lint test test-unit demo bench clean

setup: venv

apt: $(BUILD)/.apt-stamp
$(BUILD)/.apt-stamp: Makefile
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES)
	mkdir -p $(BUILD) && touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml $(BUILD)/.apt-stamp
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The tiny guest (Debian kernel + busybox initramfs); rebuilt when its inputs change.
guest: venv
	$(VENV)/bin/kvnet guest build --out $(BUILD)/guest

# The real peers (kube-apiserver, etcd, Multus 4.3, CNI plugins 1.10, whereabouts, kubevirt-peer)
# from Go modules, cached by a stamp of their pins (peers/README.md); about 16 minutes cold.
peers:
	OUT=$(PEERS) bash peers/build.sh

# ruff (lint and format) and mypy --strict, on the checkout as it is
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy kvnet

test: venv guest peers lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

demo: venv guest
	$(VENV)/bin/kvnet demo --guest $(BUILD)/guest

bench: venv guest peers
	$(PY) -m bench

clean:
	rm -rf $(BUILD) $(VENV)
