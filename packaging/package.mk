# Packaging targets, included from the top-level Makefile:
#
#   make static        the statically linked binary (runs on glibc 2.17 / kernel 3.10 hosts)
#   make deb           target/packages/execsentry_<version>-1_amd64.deb
#   make rpm           target/packages/execsentry-<version>-1.x86_64.rpm
#   make image         docker image execsentry:<version> (FROM scratch)
#   make package-test  tests/packaging.sh: builds, installs, purges (root);
#                      then the .deb installed in a booted Debian (below)
#   make vm-systemd    the .deb installed and exercised in Debian bookworm
#                      booted under qemu TCG with systemd, journald and
#                      rsyslog (tests/vm/systemd/run.sh, root)
#
# Uses CARGO, SUDO from the Makefile that includes this file.

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

# musl gives a static binary with a libc made for it. Where its std is not
# installed (rustup cannot download it here), glibc's crt-static is the
# fallback: also fully static, and its kernel floor (3.2) is below 3.10.
STATIC_TARGET ?= $(shell rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl \
	&& echo x86_64-unknown-linux-musl || echo x86_64-unknown-linux-gnu)
STATIC_BIN := target/$(STATIC_TARGET)/release/execsentry
# Cargo's per-target variable: it applies to the sensor and its
# dependencies but not to build scripts and proc macros, which run here.
STATIC_RUSTFLAGS_VAR := CARGO_TARGET_$(shell echo $(STATIC_TARGET) | tr 'a-z-' 'A-Z_')_RUSTFLAGS

PKG_DIR := target/packages
DOCS_DIR := target/packaging/docs
IMAGE_CONTEXT := target/packaging/image
IMAGE ?= execsentry:$(VERSION)

# Pinned so a package build is repeatable.
CARGO_DEB_VERSION := 3.8.0

.PHONY: static docs deb rpm image package-test vm-systemd deb-tools rpm-tools

# An explicit --target keeps these artifacts in target/$(STATIC_TARGET)/,
# apart from the dynamic target/release the other targets share, so the two
# builds never invalidate each other. Symbols are stripped: the packages
# ship no debug info.
static:
	env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
		$(STATIC_RUSTFLAGS_VAR)="-C target-feature=+crt-static" \
		CARGO_PROFILE_RELEASE_STRIP=symbols \
		$(CARGO) build --release --locked --target $(STATIC_TARGET) --bin execsentry
	@file -L $(STATIC_BIN) | grep -Eq 'static(-pie)? linked' \
		|| { echo "$(STATIC_BIN) is not statically linked:"; file -L $(STATIC_BIN); exit 1; }
	@echo "static: $(STATIC_BIN) ($(STATIC_TARGET), crt-static)"

# Man pages and completions from the CLI definition itself.
docs:
	rm -rf $(DOCS_DIR)
	$(CARGO) run --quiet --locked --example gen_docs -- $(DOCS_DIR) >/dev/null
	gzip -9n $(DOCS_DIR)/man/*.1

deb-tools:
	@$(CARGO) deb --version 2>/dev/null | grep -qF '$(CARGO_DEB_VERSION)' \
		|| $(CARGO) install --locked cargo-deb --version $(CARGO_DEB_VERSION)

rpm-tools:
	@command -v rpmbuild >/dev/null 2>&1 || { \
		echo "rpmbuild missing: apt-get install rpm (Debian) / dnf install rpm-build"; \
		[ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rpm; }

# --no-build: the binary is `make static`'s; --no-strip: already stripped.
deb: deb-tools static docs
	mkdir -p $(PKG_DIR)
	$(CARGO) deb --no-build --no-strip --target $(STATIC_TARGET) --output $(PKG_DIR)/execsentry_$(VERSION)-1_amd64.deb
	@echo "deb: $(PKG_DIR)/execsentry_$(VERSION)-1_amd64.deb"

# rpmbuild, not cargo-generate-rpm: see the top of packaging/rpm/execsentry.spec.
RPM_TOPDIR := $(CURDIR)/target/packaging/rpmbuild
rpm: rpm-tools static docs
	mkdir -p $(PKG_DIR)
	rm -rf $(RPM_TOPDIR)
	rpmbuild -bb --quiet --target x86_64-linux \
		--define '_topdir $(RPM_TOPDIR)' \
		--define 'pkg_version $(VERSION)' \
		--define 'srcroot $(CURDIR)' \
		--define 'static_bin $(CURDIR)/$(STATIC_BIN)' \
		--define 'docs_dir $(CURDIR)/$(DOCS_DIR)' \
		packaging/rpm/execsentry.spec
	cp $(RPM_TOPDIR)/RPMS/x86_64/execsentry-$(VERSION)-1.x86_64.rpm $(PKG_DIR)/
	@echo "rpm: $(PKG_DIR)/execsentry-$(VERSION)-1.x86_64.rpm"

# A small build context instead of the repository (target/ is gigabytes).
# Files are laid out with root-only write bits because the sensor refuses
# configuration and rules that others could have written. /bin/true is
# there for the daemon's start-up self-check, which execs it.
image: static
	rm -rf $(IMAGE_CONTEXT)
	mkdir -p $(IMAGE_CONTEXT)/rootfs/usr/bin $(IMAGE_CONTEXT)/rootfs/bin \
		$(IMAGE_CONTEXT)/rootfs/usr/share/execsentry/rules \
		$(IMAGE_CONTEXT)/rootfs/etc/execsentry/rules.d \
		$(IMAGE_CONTEXT)/rootfs/run/execsentry $(IMAGE_CONTEXT)/rootfs/tmp
	install -m 0755 $(STATIC_BIN) $(IMAGE_CONTEXT)/rootfs/usr/bin/execsentry
	install -m 0644 rules/*.toml $(IMAGE_CONTEXT)/rootfs/usr/share/execsentry/rules/
	install -m 0644 packaging/execsentry.toml $(IMAGE_CONTEXT)/rootfs/etc/execsentry/execsentry.toml
	printf 'int main(void) { return 0; }\n' | \
		$(CC) -x c -static -Os -s -o $(IMAGE_CONTEXT)/rootfs/bin/true -
	chmod 1777 $(IMAGE_CONTEXT)/rootfs/tmp
	cp packaging/image/Dockerfile $(IMAGE_CONTEXT)/Dockerfile
	docker build --quiet -t $(IMAGE) -t execsentry:latest $(IMAGE_CONTEXT)
	@echo "image: $(IMAGE)"

DEB := $(PKG_DIR)/execsentry_$(VERSION)-1_amd64.deb

# packaging.sh has just built the .deb the VM installs.
package-test:
	$(SUDO) bash tests/packaging.sh
	$(SUDO) bash tests/vm/systemd/run.sh --deb $(DEB)

vm-systemd: deb
	$(SUDO) bash tests/vm/systemd/run.sh --deb $(DEB)
