# arbor: the two commands a fresh machine needs are `make demo` and `make test`.
# rustup's cargo when it is installed, whatever comes first in PATH (`make cross`
# installs Debian's /usr/bin/cargo, which has no clippy).
CARGO ?= $(firstword $(wildcard $(HOME)/.cargo/bin/cargo) cargo)

.PHONY: all setup build demo test lint bench soak sample-repo cross clean

all: build

setup:
	scripts/setup

build: setup
	$(CARGO) build --all-targets

# Build the sample rpm-md repository (real aarch64/armv7hl/x86_64 RPMs from Debian's packages).
sample-repo: setup
	$(CARGO) run --quiet --bin arbor-sample-repo -- --output target/sample-repo

# Cross-build the arbor binary for the board with Debian's Rust against a sysroot of the
# target's libraries (cached in target/cross/), and run it under qemu-user. One arch at a
# time: `make cross ARCH=aarch64` or ARCH=armv7; both by default. Not `?=`: an ARCH from
# the environment (kernel builds set one) must not pick the arches.
ARCH = aarch64 armv7
cross:
	scripts/setup --cross
	@for a in $(ARCH); do scripts/cross $$a || exit 1; done

# The main job end to end, as far as it exists today.
demo: build
	scripts/demo

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Tests that need root are #[ignore = "needs root: …"]: run as root (CI), make test
# runs them too; without root, libtest lists them as ignored with the reason.
# Two ignored tests are heavy rather than root's and stay out: run them by hand
# with `cargo test -- --ignored NAME`.
HEAVY_TESTS := bundle::tests::members_over_4_gib_stream_through flash::throughput
ifeq ($(shell id -u),0)
TEST_ARGS := --include-ignored --exact $(addprefix --skip ,$(HEAVY_TESTS))
endif

test: setup lint
	$(CARGO) test --no-fail-fast -- $(TEST_ARGS)

# Long soaks, opt-in (as root): the device kill matrix with SOAK_RUNS SIGKILLs at
# seeded random moments of an upgrade (make test runs 50); prints its counts.
SOAK_RUNS ?= 200
soak: setup
	ARBOR_KILL_RUNS=$(SOAK_RUNS) $(CARGO) test --test it -- --include-ignored --exact --nocapture \
		device::killed_at_every_stage_the_sysroot_boots_old_or_new_and_a_rerun_completes

bench: setup
	$(CARGO) bench --bench sample_repo --bench resolve --bench compose --bench delta --bench scriptlets --bench image --bench upgrade

clean:
	$(CARGO) clean
