#!/bin/sh
# arbor-initramfs /init (busybox sh): load the storage and filesystem modules,
# mount root=, set up the OSTree deployment named by ostree= the way
# ostree-prepare-root does, and switch_root into it. On any failure: say why
# on the console and drop to an emergency shell (PID 1 must never exit).

export PATH=/bin
# Kernel arguments are split on spaces below; never glob them.
set -f

MODULES=/etc/arbor-initramfs/modules

quiet=
say() { [ -n "$quiet" ] || echo "arbor-initramfs: $*"; }
warn() { echo "arbor-initramfs: $*"; }

emergency() {
	warn "$*"
	warn "cannot boot; starting an emergency shell"
	while :; do
		sh
		sleep 1
	done
}

mkdir -p /proc /sys /dev /run /sysroot /newroot /tmp
mount -t proc -o nosuid,nodev,noexec proc /proc || emergency "mounting /proc failed"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || emergency "mounting /sys failed"
mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || emergency "mounting /dev failed"
exec </dev/console >/dev/console 2>&1

root=
ostree=
init=/sbin/init
rootfstype=ext4
rootflags=
rwmode=ro
rootwait=
rootdelay=30
read -r cmdline </proc/cmdline
for arg in $cmdline; do
	case "$arg" in
	root=*) root=${arg#root=} ;;
	ostree=*) ostree=${arg#ostree=} ;;
	init=*) init=${arg#init=} ;;
	rootfstype=*) rootfstype=${arg#rootfstype=} ;;
	rootflags=*) rootflags=${arg#rootflags=} ;;
	rootdelay=*) rootdelay=${arg#rootdelay=} ;;
	rootwait) rootwait=1 ;;
	ro) rwmode=ro ;;
	rw) rwmode=rw ;;
	quiet) quiet=1 ;;
	esac
done
[ -n "$root" ] || emergency "no root= on the kernel command line"
[ -n "$ostree" ] || emergency "no ostree= on the kernel command line"

# Modules in load order, dependencies first; a driver for hardware this board
# does not have loads and does nothing, so a failure here is only a warning.
if [ -f "$MODULES" ]; then
	while read -r ko; do
		[ -n "$ko" ] || continue
		insmod "$ko" || warn "loading $ko failed"
	done <"$MODULES"
fi

# PARTUUID= as the kernel spells it: MBR "SSSSSSSS-NN" (disk signature,
# partition number), GPT the partition's unique GUID. busybox findfs knows
# LABEL= and UUID= only, so partition tables are read here.
# shellcheck disable=SC2046 # od's output is split into bytes on purpose
partuuid_of() {
	part=$1
	n=$(cat "/sys/class/block/$part/partition" 2>/dev/null) || return 1
	disk=$(readlink -f "/sys/class/block/$part/..")
	disk=/dev/${disk##*/}
	set -- $(od -An -tx1 -j512 -N8 "$disk")
	if [ "$*" = "45 46 49 20 50 41 52 54" ]; then
		# GPT: entries start at the LBA in header bytes 72..75, 128 bytes each
		# (512-byte sectors, as SD cards and virtio disks have).
		set -- $(od -An -tx1 -j584 -N4 "$disk")
		lba=$((0x$4$3$2$1))
		set -- $(od -An -tx1 -j$((lba * 512 + (n - 1) * 128 + 16)) -N16 "$disk")
		echo "$4$3$2$1-$6$5-$8$7-$9${10}-${11}${12}${13}${14}${15}${16}"
	else
		set -- $(od -An -tx1 -j440 -N4 "$disk")
		printf '%s%s%s%s-%02x\n' "$4" "$3" "$2" "$1" "$n"
	fi
}

find_root() {
	case "$root" in
	LABEL=* | UUID=*)
		findfs "$root" 2>/dev/null
		;;
	PARTUUID=*)
		want=$(echo "${root#PARTUUID=}" | tr 'A-F' 'a-f')
		# The one glob in this script (set -f is on for the command line).
		set +f
		parts=$(echo /sys/class/block/*)
		set -f
		for p in $parts; do
			p=${p##*/}
			[ -f "/sys/class/block/$p/partition" ] || continue
			if [ "$(partuuid_of "$p")" = "$want" ]; then
				echo "/dev/$p"
				return 0
			fi
		done
		return 1
		;;
	/dev/*)
		[ -b "$root" ] && echo "$root"
		;;
	*)
		return 1
		;;
	esac
}

# Without rootwait, give up after rootdelay seconds (default 30); with it,
# wait as long as it takes, as the kernel does.
say "waiting for root device $root"
tries=0
while ! dev=$(find_root) || [ -z "$dev" ]; do
	tries=$((tries + 1))
	if [ -z "$rootwait" ] && [ "$tries" -ge $((rootdelay * 5)) ]; then
		emergency "root device $root did not appear within ${rootdelay}s"
	fi
	if [ $((tries % 50)) -eq 0 ]; then
		warn "still waiting for root device $root"
	fi
	sleep 0.2
done

say "mounting $dev ($root) on /sysroot"
mount -t "$rootfstype" -o "$rwmode${rootflags:+,$rootflags}" "$dev" /sysroot ||
	emergency "mounting $dev ($root) on /sysroot failed"

# ostree= names a boot symlink (/ostree/boot.N/OS/CHECKSUM/SERIAL) whose
# chain leads to /ostree/deploy/OS/deploy/CHECKSUM.SERIAL; its links are
# relative, so resolving them under /sysroot stays inside the root.
deploy=$(readlink -f "/sysroot$ostree") || emergency "ostree=$ostree: cannot resolve it under $root"
case "$deploy" in
/sysroot/ostree/deploy/*/deploy/*) ;;
*) emergency "ostree=$ostree resolves to ${deploy#/sysroot}, not a deployment under /ostree/deploy" ;;
esac
[ -d "$deploy" ] || emergency "ostree=$ostree: deployment ${deploy#/sysroot} is not a directory"
os=${deploy#/sysroot/ostree/deploy/}
os=${os%%/*}

# What ostree-prepare-root does: the deployment becomes /, the physical root
# is at /sysroot in it, the OS's shared /var at /var, /usr read-only.
mount --bind "$deploy" /newroot || emergency "bind-mounting the deployment ${deploy#/sysroot} failed"
mount --bind "/sysroot/ostree/deploy/$os/var" /newroot/var ||
	emergency "bind-mounting /ostree/deploy/$os/var on /var failed"
mount --bind /newroot/usr /newroot/usr || emergency "bind-mounting /usr failed"
mount -o remount,bind,ro /newroot/usr || emergency "making /usr read-only failed"
mount --move /sysroot /newroot/sysroot || emergency "moving the physical root to /sysroot failed"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run || emergency "mounting /run failed"
touch /newroot/run/ostree-booted || emergency "writing /run/ostree-booted failed"

if [ ! -e "/newroot$init" ] && [ ! -L "/newroot$init" ]; then
	emergency "init=$init does not exist in the deployment"
fi
for m in /dev /proc /sys; do
	mount --move "$m" "/newroot$m" || emergency "moving $m into the new root failed"
done
echo "arbor-initramfs: switching to ${deploy#/sysroot}"
exec switch_root /newroot "$init"
