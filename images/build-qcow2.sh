#!/usr/bin/env bash
# Builds the Skyburst worker image: a qcow2 disk of Debian bookworm (debootstrap minbase, the
# cloud kernel, cloud-init, OpenSSH) that already holds the release — a stripped copy of the
# skyburst binary, the YOLOv3-tiny model files and the worker's systemd unit. An instance booted
# from it with the user-data `skyburst render-user-data` prints (images/cloud-init/worker.yaml)
# downloads nothing when the pinned release is the one baked in (images/boot/install-worker.sh).
#
#   sudo images/build-qcow2.sh [options] BINARY
#
# Needs root (debootstrap, chroot, bind mounts), Debian's apt and about 3 GB in the work
# directory; installs debootstrap, fdisk, qemu-utils, e2fsprogs and binutils when they are
# missing. Takes 2-3 minutes (130 s measured), mostly debootstrap and apt. Not part of CI. See
# images/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: images/build-qcow2.sh [options] BINARY

Builds a qcow2 worker image (Debian bookworm, BIOS boot, one ext4 partition) holding BINARY
(stripped), the model files and the worker's systemd unit.

  BINARY             the skyburst binary to bake in: the one you publish with
                     scripts/publish-worker.sh (target/release/skyburst), so that the
                     image's release matches the sums the user-data pins
  --out FILE         the image (default: ./skyburst-worker-VERSION.qcow2)
  --models DIR       the model files, checked against the sha256 sums pinned in
                     scripts/fetch-assets.sh (default: ~/.cache/skyburst/models, where
                     scripts/fetch-assets.sh puts them)
  --size SIZE        the disk's virtual size, e.g. 2G (default 2G); cloud-init grows the
                     partition to the flavor's disk at first boot
  --mirror URL       Debian mirror (default http://deb.debian.org/debian)
  --work-dir DIR     where the root tree and the raw disk are made (default: a new
                     directory under /var/tmp, removed at the end)
  --keep-work        keep the work directory (rootfs/ and disk.raw) for inspection
  -h, --help         this text
EOF
}

die() { echo "error: $*" >&2; exit 1; }
say() { echo "==> $*"; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
binary="" out="" size=2G mirror=http://deb.debian.org/debian work="" keep_work=0
models="${XDG_CACHE_HOME:-$HOME/.cache}/skyburst/models"
while [ $# -gt 0 ]; do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --out) out=${2:?--out needs a file}; shift 2 ;;
    --models) models=${2:?--models needs a directory}; shift 2 ;;
    --size) size=${2:?--size needs a size}; shift 2 ;;
    --mirror) mirror=${2:?--mirror needs a URL}; shift 2 ;;
    --work-dir) work=${2:?--work-dir needs a directory}; shift 2 ;;
    --keep-work) keep_work=1; shift ;;
    -*) usage >&2; exit 64 ;;
    *) [ -z "$binary" ] || { usage >&2; exit 64; }; binary=$1; shift ;;
  esac
done
[ -n "$binary" ] || { usage >&2; exit 64; }
[ "$(id -u)" = 0 ] || die "run as root: debootstrap, chroot and its bind mounts need it"
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then die "$binary is not an executable file"; fi
command -v apt-get >/dev/null || die "this script runs on Debian or a derivative (it needs apt-get)"
started=$SECONDS

# Image layout, fixed so that the boot path, fstab and the tests agree.
readonly suite=bookworm
readonly image_model_dir=/var/lib/skyburst/models # boot.model_dir's default
readonly baked=/usr/local/lib/skyburst/preinstalled # read by images/boot/install-worker.sh
readonly part_offset_mib=1                          # the partition starts at 1 MiB (sector 2048)
readonly model_files=(yolov3-tiny.cfg yolov3-tiny.weights coco.names) # src/boot.rs MODEL_FILES

# === host tools ===

# Host tools, from Debian's apt when missing: command → package.
missing=()
for pair in debootstrap:debootstrap sfdisk:fdisk qemu-img:qemu-utils mkfs.ext4:e2fsprogs strip:binutils; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# === inputs, checked before anything is built ===

version=$("$binary" --version | awk '{print $2}')
[ -n "$version" ] || die "$binary --version printed no version"
[ -n "$out" ] || out="$PWD/skyburst-worker-$version.qcow2"

# The sums scripts/fetch-assets.sh pins: one list of model sums in the repository.
declare -A model_sum
while IFS='=' read -r key sum; do
  case $key in
    WEIGHTS_SHA) model_sum[yolov3-tiny.weights]=$sum ;;
    CFG_SHA) model_sum[yolov3-tiny.cfg]=$sum ;;
    NAMES_SHA) model_sum[coco.names]=$sum ;;
  esac
done < <(grep -E '^(WEIGHTS|CFG|NAMES)_SHA=[0-9a-f]{64}$' "$repo/scripts/fetch-assets.sh")
for f in "${model_files[@]}"; do
  [ -n "${model_sum[$f]:-}" ] || die "no sha256 for $f in scripts/fetch-assets.sh"
  [ -f "$models/$f" ] || die "missing $models/$f: run scripts/fetch-assets.sh --models-only (or pass --models)"
  [ "$(sha256sum "$models/$f" | cut -d' ' -f1)" = "${model_sum[$f]}" ] ||
    die "$models/$f does not match its pinned sha256 ${model_sum[$f]}; run scripts/fetch-assets.sh again"
done
binary_sum=$(sha256sum "$binary" | cut -d' ' -f1)
# A cloud worker reads SQS and S3: a binary built without `--features aws` (which has no `aws`
# command) refuses the worker config render-user-data writes. Built anyway, with a warning.
no_aws=""
if ! "$binary" aws --help >/dev/null 2>&1; then
  no_aws="$binary was built without --features aws: its worker cannot use SQS or S3 and exits 64 on the rendered
              worker config; build the release with scripts/publish-worker.sh (cargo build --release --features aws)"
  echo "warning: $no_aws" >&2
fi

size_bytes=$(numfmt --from=iec "$size") || die "--size $size is not a size (e.g. 2G)"
[ "$size_bytes" -ge $((1024 * 1024 * 1024)) ] || die "--size must be at least 1G"
size_bytes=$((size_bytes / 1048576 * 1048576))

# === work directory and the cleanup trap ===

if [ -z "$work" ]; then
  work=$(mktemp -d /var/tmp/skyburst-image.XXXXXX)
else
  mkdir -p "$work"
  work=$(cd "$work" && pwd)
  [ ! -e "$work/rootfs" ] || die "$work/rootfs exists: pass an empty --work-dir"
fi
root="$work/rootfs"
mkdir -m 0755 "$root"
mounts=()

mounted_under() { awk -v p="$1/" 'index($2 "/", p) == 1 { found = 1 } END { exit !found }' /proc/mounts; }

cleanup() {
  local status=$? i
  # Bind mounts first, newest first: a lazy unmount if a chroot process still holds one.
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" || true
  done
  rm -f "$root/usr/sbin/policy-rc.d"
  if mounted_under "$work"; then
    # Never rm -rf a tree with /dev or /proc bound inside it.
    echo "error: mounts remain under $work; not removing it (see /proc/mounts)" >&2
  elif [ "$keep_work" = 1 ]; then
    echo "work directory kept: $work"
  elif [ "$status" != 0 ]; then
    echo "build failed; work directory kept for inspection: $work (delete it when done)" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bind() { # source, target inside the root
  mkdir -p "$root$2"
  mount --bind "$1" "$root$2"
  mounts+=("$root$2")
}

in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

# === the root tree ===

say "debootstrap $suite (minbase) from $mirror"
debootstrap --variant=minbase --arch=amd64 --components=main "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  die "debootstrap failed; its log: $work/debootstrap.log"

mount -t proc proc "$root/proc"
mounts+=("$root/proc")
mount -t sysfs sysfs "$root/sys"
mounts+=("$root/sys")
bind /dev /dev
bind /dev/pts /dev/pts

# No service starts inside the chroot (openssh-server and dbus would try).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"

# Keep the image small: no manuals, info pages, translations or docs beyond the licences. Kept
# in the image, so packages installed later on an instance follow it too.
cat >"$root/etc/dpkg/dpkg.cfg.d/90-skyburst-slim" <<'EOF'
# Skyburst worker image (images/build-qcow2.sh): no docs, manuals or translations.
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF

cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF

# What a cloud VM needs, and no more (--no-install-recommends):
#   linux-image-cloud-amd64     the kernel built for KVM/Xen/Hyper-V guests (virtio, ENA, NVMe)
#                               with initramfs-tools; /vmlinuz and /initrd.img link to it
#   grub-pc-bin                 GRUB's BIOS modules and grub-mkimage (no grub-pc: its postinst
#                               wants a disk device to install to; the boot sector is written
#                               below instead)
#   systemd-sysv udev dbus      init, device nodes and names, the system bus
#   ifupdown isc-dhcp-client    the network cloud-init renders (its ENI renderer; dhclient also
#   iproute2 netbase            writes the DNS servers to resolv.conf)
#   systemd-timesyncd           clock sync: SigV4-signed SQS/S3 calls fail 5 min off the clock
#   cloud-init cloud-guest-utils  the user-data, and growpart to fill the flavor's disk
#   openssh-server sudo         operator access as cloud-init's default user
#   ca-certificates             TLS to the SQS and S3 endpoints
packages=(linux-image-cloud-amd64 grub-pc-bin systemd-sysv udev dbus ifupdown isc-dhcp-client iproute2 netbase
  systemd-timesyncd cloud-init cloud-guest-utils openssh-server sudo ca-certificates)

say "installing ${#packages[@]} packages"
{
  in_root apt-get update
  in_root apt-get -y dist-upgrade
  in_root apt-get install -y --no-install-recommends "${packages[@]}"
} >"$work/apt.log" 2>&1 || die "package installation failed; its log: $work/apt.log"

# The datasources probed at boot, in order: Nova's config drive and metadata service first
# (OpenStack before Ec2: Nova also serves an EC2-style metadata API), then EC2, NoCloud for a
# local qemu run, and None. Bookworm's package no longer writes the list it asks debconf for
# (90_dpkg.cfg), so it is set here, on one line as ds-identify reads it.
datasources="ConfigDrive, OpenStack, Ec2, NoCloud, None"
cat >"$root/etc/cloud/cloud.cfg.d/91_skyburst.cfg" <<EOF
# Skyburst worker image (images/build-qcow2.sh).
datasource_list: [ $datasources ]
# C.UTF-8 needs no locale-gen at first boot (a few seconds saved on every instance).
locale: C.UTF-8
# Grow the root partition and its filesystem to the flavor's disk.
growpart:
  mode: auto
  devices: ["/"]
resize_rootfs: true
EOF

# Without a datasource cloud-init makes no SSH host keys (none are in the image): sshd then
# makes its own instead of failing. With one, cloud-init.service runs first and they exist.
install -d "$root/etc/systemd/system/ssh.service.d"
cat >"$root/etc/systemd/system/ssh.service.d/10-skyburst-host-keys.conf" <<'EOF'
[Service]
ExecStartPre=/usr/bin/ssh-keygen -A
EOF

# === Skyburst: the binary, the model, the unit, the record of the baked release ===

say "installing skyburst $version and the model files"
install -d -m 0755 "$root/usr/local/bin" "$root$image_model_dir" "$root$baked"
strip --strip-unneeded -o "$root/usr/local/bin/skyburst" "$binary"
chmod 0755 "$root/usr/local/bin/skyburst"
for f in "${model_files[@]}"; do
  install -m 0644 "$models/$f" "$root$image_model_dir/$f"
done
# Installed, not enabled: the user-data's runcmd enables and starts it once install-worker.sh
# has checked the release (an enabled unit could start the baked binary while a different
# pinned release is being installed, and `enable --now` would not restart it).
install -m 0644 "$repo/images/systemd/skyburst-worker.service" "$root/etc/systemd/system/skyburst-worker.service"

# The baked release, in the format of the user-data's /etc/skyburst/release.sha256: the sum of
# BINARY as `aws publish-worker` uploads it (the image holds a stripped copy, whose own sum is
# in installed.sha256 with the models') and of each model file under models/.
{
  echo "$binary_sum  skyburst"
  for f in "${model_files[@]}"; do echo "${model_sum[$f]}  models/$f"; done
} >"$root$baked/release.sha256"
echo "$version" >"$root$baked/version"
echo "$image_model_dir" >"$root$baked/model-dir"
(cd "$root" && sha256sum "usr/local/bin/skyburst" "${image_model_dir#/}"/*) | sed 's|  |  /|' >"$root$baked/installed.sha256"

# === boot: fstab, GRUB, first-boot identity ===

uuid=$(cat /proc/sys/kernel/random/uuid)
echo "UUID=$uuid / ext4 rw,discard,errors=remount-ro 0 1" >"$root/etc/fstab"

# GRUB for BIOS boot (Nova's default firmware; the cloud kernel has no need for UEFI here).
# core.img is made by grub-mkimage with an embedded config that finds the root filesystem by
# UUID, and written with boot.img straight into the disk file further down: grub-install would
# need the disk and its partition as block devices, which a container without udev does not give.
install -d "$root/boot/grub/i386-pc"
cp "$root"/usr/lib/grub/i386-pc/*.mod "$root"/usr/lib/grub/i386-pc/*.lst "$root/boot/grub/i386-pc/"
cat >"$root/boot/grub/early.cfg" <<EOF
search --no-floppy --fs-uuid --set=root $uuid
set prefix=(\$root)/boot/grub
EOF
cat >"$root/boot/grub/grub.cfg" <<EOF
# Skyburst worker image (images/build-qcow2.sh). /vmlinuz and /initrd.img follow kernel updates.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
menuentry 'Debian GNU/Linux 12 (Skyburst worker)' {
  linux /vmlinuz root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8
  initrd /initrd.img
}
EOF
in_root grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img -c /boot/grub/early.cfg -p /boot/grub \
  biosdisk part_msdos ext2 search search_fs_uuid configfile normal
cp "$root/usr/lib/grub/i386-pc/boot.img" "$root/boot/grub/i386-pc/boot.img"

# First-boot identity: every instance makes its own machine id and SSH host keys (cloud-init
# regenerates the keys before sshd starts); the host's name and resolver do not leak in.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo localhost >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
rm -f "$root/etc/resolv.conf"
: >"$root/etc/resolv.conf"

# === checks on the root tree ===

say "checking the root tree"
check() { # what, command...
  local what=$1; shift
  "$@" >"$work/check.log" 2>&1 || { cat "$work/check.log" >&2; die "check failed: $what"; }
  echo "    ok  $what"
}
runs_in_root() { [ "$(in_root /usr/local/bin/skyburst --version)" = "skyburst $version" ]; }
models_match_pins() {
  local f
  for f in "${model_files[@]}"; do echo "${model_sum[$f]}  $root$image_model_dir/$f"; done | sha256sum --check --strict
}
cloud_init_enabled() {
  in_root cloud-init --version && [ -L "$root/etc/systemd/system/cloud-init.target.wants/cloud-final.service" ]
}
services_enabled() {
  local unit
  for unit in multi-user.target.wants/ssh.service multi-user.target.wants/networking.service \
    sysinit.target.wants/systemd-timesyncd.service; do
    # Absolute links into the image: test the link, not its target on this host.
    [ -L "$root/etc/systemd/system/$unit" ] || { echo "not enabled: $unit"; return 1; }
  done
}
kernel_links() { [ -f "$root/boot/$(basename "$(readlink "$root/vmlinuz")")" ] && [ -f "$root/boot/$(basename "$(readlink "$root/initrd.img")")" ]; }
core_fits() { [ "$(stat -c %s "$root/boot/grub/i386-pc/core.img")" -lt $((part_offset_mib * 1048576 - 512)) ]; }
check "skyburst --version in the chroot prints 'skyburst $version'" runs_in_root
check "the model files match the sha256 sums pinned in scripts/fetch-assets.sh" models_match_pins
check "$baked/installed.sha256 matches the installed files" in_root sha256sum --check --strict "$baked/installed.sha256"
check "the worker's unit passes systemd-analyze verify" in_root systemd-analyze verify /etc/systemd/system/skyburst-worker.service
check "cloud-init is installed and enabled" cloud_init_enabled
check "cloud-init probes $datasources" grep -qxF "datasource_list: [ $datasources ]" "$root/etc/cloud/cloud.cfg.d/91_skyburst.cfg"
check "ssh, networking and systemd-timesyncd are enabled" services_enabled
check "/vmlinuz and /initrd.img point at the installed kernel" kernel_links
check "GRUB's core.img fits before the partition" core_fits

in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log "$root"/var/log/apt/* \
  "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/tmp/* "$root"/root/.bash_history
rm -f "$root/usr/sbin/policy-rc.d"
for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}"; done
mounts=()

# === the disk: MBR, GRUB, one ext4 partition ===

# The filesystem is made from the tree with `mkfs.ext4 -d` into a file of its own and checked
# with e2fsck, then copied into the disk at 1 MiB: no loop device, partition device or mount is
# needed (a container often has no udev to make /dev/loopNpM, and may not allow loop mounts).
# Feature list pinned (bookworm's ext4 defaults), so a newer host's mke2fs cannot add one that
# GRUB 2.06 refuses to read (metadata_csum_seed, orphan_file).
used_kib=$(du -sk "$root" | cut -f1)
fs_bytes=$((size_bytes - part_offset_mib * 1048576))
[ $((used_kib * 1024 * 10 / 8)) -lt "$fs_bytes" ] ||
  die "the root tree ($((used_kib / 1024)) MiB) needs a larger --size than $size"
say "making the disk ($size: root tree $((used_kib / 1024)) MiB)"
cat >"$work/mke2fs.conf" <<'EOF'
[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
EOF
rm -f "$work/root.ext4"
MKE2FS_CONFIG="$work/mke2fs.conf" mkfs.ext4 -q -t ext4 -L skyburst-root -U "$uuid" -d "$root" \
  "$work/root.ext4" "$((fs_bytes / 1024))k" >/dev/null
e2fsck -fn "$work/root.ext4" >"$work/e2fsck.log" 2>&1 || die "e2fsck found errors: $work/e2fsck.log"

raw="$work/disk.raw"
rm -f "$raw"
truncate -s "$size_bytes" "$raw"
printf 'label: dos\nstart=%d, type=83, bootable\n' $((part_offset_mib * 2048)) | sfdisk --quiet "$raw"
# boot.img's first 440 bytes (the partition table after them stays); core.img from sector 1,
# where boot.img's default kernel sector points.
dd if="$root/boot/grub/i386-pc/boot.img" of="$raw" bs=440 count=1 conv=notrunc status=none
dd if="$root/boot/grub/i386-pc/core.img" of="$raw" bs=512 seek=1 conv=notrunc status=none
dd if="$work/root.ext4" of="$raw" bs=1M seek="$part_offset_mib" conv=notrunc,sparse status=none
rm -f "$work/root.ext4"

say "converting to qcow2 (compressed)"
mkdir -p "$(dirname "$out")"
qemu-img convert -f raw -O qcow2 -c "$raw" "$out.partial"
mv "$out.partial" "$out"
[ "$keep_work" = 1 ] || rm -f "$raw"

echo
echo "image:        $out"
echo "release:      skyburst $version (binary sha256 $binary_sum)"
echo "size:         $(du -h "$out" | cut -f1) on disk, $size virtual (root tree $((used_kib / 1024)) MiB)"
echo "took:         $((SECONDS - started)) s"
if [ -n "$no_aws" ]; then echo "warning:      $no_aws"; fi
echo "upload:       openstack image create --disk-format qcow2 --container-format bare --file $out skyburst-worker"
