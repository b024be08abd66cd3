# Two commands set everything up on a fresh Debian machine (as root): `make demo` and `make test`.
VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
# Debian packages the tests and the lab use (real dhcpd, TFTP client, boot files, DHCP client, sshd).
# grub-pc-bin holds GRUB's i386-pc files (BIOS GRUB on disk images); it has no maintainer scripts and pulls
# no grub-pc and runs no grub-install: the host's boot is not touched.
DEB_PKGS  := isc-dhcp-server tftp-hpa pxelinux syslinux-common busybox udhcpc openssh-server \
             iproute2 iputils-ping procps zstd xz-utils bzip2 curl libpcap0.8 \
             grub-efi-amd64-bin grub-pc-bin kmod binutils qemu-system-x86 ipxe-qemu ovmf mmdebstrap \
             dosfstools mtools fdisk gdisk kea-dhcp4-server squashfs-tools openipmi ipmitool atftpd atftp
PYTEST_ARGS ?=

.PHONY: all deps debs venv test test-fast demo demo-vm bench clean

all: test

deps: debs venv

# Installs only what is missing. A policy-rc.d keeps package scripts from starting host-wide
# services (a system dhcpd or sshd): provision starts its own processes on its own addresses.
debs:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run as root to install)"; exit 1; fi; \
	  echo "installing Debian packages:$$missing"; \
	  policy=/usr/sbin/policy-rc.d; made=""; \
	  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy; chmod +x $$policy; made=1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  rc=$$?; [ -n "$$made" ] && rm -f $$policy; exit $$rc; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)

venv: $(PY)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test,bench]'

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: deps
	$(PY) -m pytest -m "not vm" $(PYTEST_ARGS)

# The whole workflow on a simulated cluster of network namespaces (root): lab up (4 nodes), provision install
# in the lab's server namespace, the nodes PXE-boot and install with real clients, summary, lab down.
demo: deps
	$(PY) -m provision lab demo --inventory inventory/lab.yaml --nodes 4

# The whole install on QEMU machines (root; TCG): 2 BIOS + 1 UEFI machines, powered on through their BMCs
# (ipmi_sim) by `provision install --power-cycle`, PXE-boot our installer, are cloned through the ring, reboot
# from their own disks and answer `provision verify` over SSH; per-phase timings; then a BIOS and the UEFI
# machine boot diskless and back to their disks.
demo-vm: deps
	$(PY) -m provision lab demo --vm --inventory inventory/lab-vm.yaml

bench: deps
	$(PY) bench/render_bench.py
	$(PY) bench/ring_bench.py
	$(PY) bench/tftp_bench.py

clean:
	rm -rf build dist .pytest_cache
