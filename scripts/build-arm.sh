#!/usr/bin/env bash
# Cross-builds dockline-agent (and optionally dockline-collector) for ARM
# Linux gateways and handhelds on a Debian 12 (bookworm) x86-64 machine.
#
#   scripts/build-arm.sh [arm64|armhf] [--collector] [--deb]
#
# The stable rustup toolchain here has no ARM standard library; Debian's
# security archive carries rustc-web/cargo-web 1.96 with libstd-rust-web-dev
# for arm64 and armhf (Multi-Arch: same), and bookworm has the GCC cross
# linkers. So: add the foreign architecture, install those, and build with
# RUSTC=/usr/bin/rustc and the target's linker and C compiler (ring and
# SQLite are C). Output: target/cross/<triple>/release/dockline-agent,
# then the ELF architecture and the highest GLIBC_ symbol version the binary
# needs (the oldest glibc it runs on) are printed and checked.
set -euo pipefail
cd "$(dirname "$0")/.."

arch="${1:-arm64}"
shift || true
crates=(-p dockline-agent)
make_deb=""
for a in "$@"; do
  case "$a" in
    --collector) crates+=(-p dockline-collector) ;;
    --deb) make_deb=1 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done

case "$arch" in
  arm64) triple=aarch64-unknown-linux-gnu; gnu=aarch64-linux-gnu; machine=AArch64 ;;
  armhf) triple=armv7-unknown-linux-gnueabihf; gnu=arm-linux-gnueabihf; machine=ARM ;;
  *) echo "usage: $0 [arm64|armhf] [--collector] [--deb]" >&2; exit 2 ;;
esac

log() { printf '[build-arm] %s\n' "$*"; }

need=()
dpkg --print-foreign-architectures | grep -qx "$arch" || {
  log "adding the $arch architecture to dpkg"
  dpkg --add-architecture "$arch"
  need_update=1
}
for p in rustc-web cargo-web "libstd-rust-web-dev:$arch" "gcc-$gnu" "libc6-dev-$arch-cross"; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ] || [ -n "${need_update:-}" ]; then
  log "installing ${need[*]:-nothing new} from Debian (bookworm-security carries rustc-web)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# rustc-web installs its compiler beside any rustup one; use it explicitly.
rustc_bin=/usr/bin/rustc
[ -x "$rustc_bin" ] || rustc_bin=$(ls /usr/bin/rustc-* 2>/dev/null | head -1)
log "compiler: $($rustc_bin --version)"

upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
lower=$(echo "$triple" | tr '-' '_')
export RUSTC="$rustc_bin"
export "CARGO_TARGET_${upper}_LINKER=$gnu-gcc"
export "CC_${lower}=$gnu-gcc" "AR_${lower}=$gnu-ar" "CXX_${lower}=$gnu-g++"
# A target dir of its own: a different compiler must not churn the host build.
export CARGO_TARGET_DIR="$PWD/target/cross"

log "fetching the locked dependencies"
cargo fetch --locked >/dev/null
started=$(date +%s)
log "building ${crates[*]} for $triple (release)"
cargo build --offline --locked --release --target "$triple" "${crates[@]}"
log "built in $(( $(date +%s) - started )) s"

floor_ok=1
for c in "${crates[@]}"; do
  [ "$c" = -p ] && continue
  bin="$CARGO_TARGET_DIR/$triple/release/$c"
  got=$(readelf -h "$bin" | awk -F: '/Machine/ {gsub(/^ +/, "", $2); print $2}')
  floor=$(readelf -V -W "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  size=$(stat -c %s "$bin")
  log "$c: ELF machine '$got', needs glibc >= ${floor#GLIBC_}, $size bytes"
  [ "$got" = "$machine" ] || { log "FAIL: $c is '$got', expected $machine"; exit 1; }
  # bookworm has glibc 2.36; anything newer would not run on the target.
  if [ "$(printf '%s\n' "${floor#GLIBC_}" 2.36 | sort -V | tail -1)" != 2.36 ]; then
    log "FAIL: $c needs glibc ${floor#GLIBC_}, newer than bookworm's 2.36"
    floor_ok=""
  fi
done
[ -n "$floor_ok" ] || exit 1

if [ -n "$make_deb" ]; then
  for c in "${crates[@]}"; do
    [ "$c" = -p ] && continue
    packaging/build-deb.sh "${c#dockline-}" "$arch" "$CARGO_TARGET_DIR/$triple/release/$c"
  done
fi
