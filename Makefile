# arbor: the two commands a fresh machine needs are `make demo` and `make test`.
# rustup's cargo when it is installed, whatever comes first in PATH (`make cross`
# installs Debian's /usr/bin/cargo, which has no clippy).
CARGO ?= $(firstword $(wildcard $(HOME)/.cargo/bin/cargo) cargo)

.PHONY: all setup build demo test lint bench fuzz soak soak-bootcount sample-repo cross device-repo clean

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

# A board's rpm-md repository for each arch in $(ARCH): the cross-built arbor (scripts/cross
# prints its path last) as an RPM plus its runtime-library closure, repackaged from the
# .debs it was linked against, into target/device-repo/<aarch64|armv7hl>.
device-repo: setup
	scripts/setup --cross
	@for a in $(ARCH); do \
	  case $$a in aarch64) deb=arm64 rpm=aarch64 ;; armv7) deb=armhf rpm=armv7hl ;; \
	    *) echo "device-repo: unknown ARCH $$a (aarch64 or armv7)" >&2; exit 1 ;; esac; \
	  out=$$(scripts/cross $$a) || exit 1; \
	  bin=$$(printf '%s\n' "$$out" | tail -n 1); \
	  $(CARGO) run --quiet --bin arbor-sample-repo -- device --arch $$rpm --arbor "$$bin" \
	    --debs "$${CARGO_TARGET_DIR:-target}/cross/debs-$$deb" -o target/device-repo/$$rpm || exit 1; \
	done

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

# arbor for both boards first (`make device-repo`: the cross builds and the device
# repositories; about 15 minutes cold on 2 cores, seconds when cached): the in-VM
# upgrade tests (tests/it/device_vm.rs) boot trees that carry it.
test: setup lint device-repo
	$(CARGO) test --no-fail-fast -- $(TEST_ARGS)

# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every reader of untrusted bytes:
# FUZZ_SECONDS in all (60 by default), shared equally by the targets; FUZZ_TARGETS picks
# some. Prints each target's runs and corpus; exits 1 on a crash (scripts/fuzz).
FUZZ_SECONDS ?= 60
fuzz:
	scripts/setup --fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz

# Long soaks, opt-in (as root): the device kill matrix with SOAK_RUNS SIGKILLs at
# seeded random moments of an upgrade (make test runs 50); prints its counts.
SOAK_RUNS ?= 200
soak: setup
	ARBOR_KILL_RUNS=$(SOAK_RUNS) $(CARGO) test --test it -- --include-ignored --exact --nocapture \
		device::killed_at_every_stage_the_sysroot_boots_old_or_new_and_a_rerun_completes

# Boot counting in qemu with POWER_CUTS power cuts (make test runs 3): about 70
# boot cycles at the default; prints its cycles, recoveries and rollback times.
POWER_CUTS ?= 24
soak-bootcount: setup device-repo
	ARBOR_POWER_CUTS=$(POWER_CUTS) $(CARGO) test --test it -- --include-ignored --exact --nocapture \
		bootcount_vm::bad_updates_roll_back_by_themselves_and_power_cuts_leave_old_or_new

bench: setup device-repo
	$(CARGO) bench --bench sample_repo --bench resolve --bench compose --bench delta --bench scriptlets --bench image --bench upgrade --bench layer --bench device_size --bench peer
	@echo "== rollback time: rebooting into a bad update until the previous deployment runs again (qemu, as root) =="
	@if [ "$$(id -u)" = 0 ]; then ARBOR_POWER_CUTS=0 $(CARGO) test --test it -- --include-ignored --exact --nocapture \
		bootcount_vm::bad_updates_roll_back_by_themselves_and_power_cuts_leave_old_or_new 2>&1 | grep -E '^(bad update|boot counting)'; \
	else echo "skipped: needs root (network namespace, loop devices)"; fi

clean:
	$(CARGO) clean
