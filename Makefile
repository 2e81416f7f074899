# vpcnet — two commands for a fresh Debian 12 machine, as root:  make demo  and  make test
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMPS := .make
APT_PACKAGES := iproute2 iptables ipset nftables etcd-server containerd runc containernetworking-plugins \
	busybox-static tcpdump procps python3-venv gcc libc6-dev chromium mmdebstrap
PYTEST_ARGS ?=
LINT_PATHS = $(wildcard vpcnet tests bench faults scripts)
# The fault suite's scenarios, in the order `make faults` runs them (faults/README-style notes in each file).
FAULT_SCENARIOS := kill9 datastore_restart ec2_faults race cni_fuzz manifest_fuzz
FAULTS_ARGS ?=

.PHONY: all deps system venv kubectl lint format typecheck test unit demo bench faults image clean

all: test

deps: system venv kubectl

# System packages: installed only when one is missing, so repeated runs cost nothing.
system: $(STAMPS)/system
$(STAMPS)/system: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages: $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

# Debian's kubectl (package kubernetes-client) drives the lab. Where another package already owns
# /usr/bin/kubectl (a cloud SDK's kubectl), Debian's is unpacked under .make instead of fighting dpkg over the
# path. Either way the venv carries a `kubectl` link to it, which the demo and the tests use first.
KUBECTL_DIR := $(STAMPS)/debian-kubectl
kubectl: $(STAMPS)/kubectl
$(STAMPS)/kubectl: Makefile $(STAMPS)/system $(STAMPS)/venv
	@export DEBIAN_FRONTEND=noninteractive; \
	if dpkg-query -W -f='$${Status}' kubernetes-client 2>/dev/null | grep -q 'install ok installed'; then \
		target=/usr/bin/kubectl; \
	elif [ -e /usr/bin/kubectl ]; then \
		echo "/usr/bin/kubectl belongs to another package: Debian's kubectl unpacked into $(KUBECTL_DIR)"; \
		rm -rf $(KUBECTL_DIR) && mkdir -p $(KUBECTL_DIR) && \
		(cd $(KUBECTL_DIR) && (apt-get download -qq kubernetes-client 2>/dev/null || \
			(apt-get update -qq && apt-get download -qq kubernetes-client)) && \
			dpkg -x kubernetes-client_*.deb root && rm -f kubernetes-client_*.deb) || exit 1; \
		target=$(CURDIR)/$(KUBECTL_DIR)/root/usr/bin/kubectl; \
	else \
		echo "installing system packages: kubernetes-client"; \
		(apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null 2>&1 || \
			(apt-get update -qq && apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null)) || exit 1; \
		target=/usr/bin/kubectl; \
	fi; \
	ln -sfn "$$target" $(VENV)/bin/kubectl
	@touch $@

venv: $(STAMPS)/venv
$(STAMPS)/venv: requirements.lock pyproject.toml
	@mkdir -p $(STAMPS)
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -r requirements.lock
	@$(PY) -m pip install -q --no-deps -e .
	@touch $@

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

format: venv
	$(VENV)/bin/ruff format $(LINT_PATHS)
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)

typecheck: venv
	$(VENV)/bin/mypy

test: deps lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(PY) -m pytest -m 'not root' $(PYTEST_ARGS)

demo: deps
	$(VENV)/bin/vpcnet demo

bench: deps
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The node image, offline from Debian packages and PyPI (no Docker daemon, no registry): scripts/image/build.py.
# Needs root (mmdebstrap's root mode), network access to deb.debian.org and PyPI; about 2 minutes. A build
# whose inputs (sources, lock, build scripts) match $(IMAGE).stamp is skipped.
IMAGE ?= vpcnet.oci.tar
image: system venv
	$(PY) scripts/image/build.py --output $(IMAGE) --stamp $(IMAGE).stamp --reuse

# Every fault scenario with its full counts (each brings up its own lab and takes it down); FIGURE lines as
# bench prints them. `make faults FAULTS_ARGS=--quick` is the bounded form CI runs (tests/root/faults).
faults: deps
	@status=0; for s in $(FAULT_SCENARIOS); do echo "== faults/$$s.py $(FAULTS_ARGS)"; \
		$(PY) faults/$$s.py $(FAULTS_ARGS) || status=1; done; exit $$status

clean:
	-$(VENV)/bin/vpcnet lab down 2>/dev/null
	rm -rf $(VENV) $(STAMPS) .mypy_cache .ruff_cache .pytest_cache build/image build/e2e-image vpcnet.oci.tar vpcnet.oci.tar.stamp
