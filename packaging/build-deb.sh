#!/usr/bin/env bash
# Builds the Debian package of one dockline binary with dpkg-deb (no
# cargo-deb: nothing to install, and the same recipe packages a cross-built
# ARM binary).
#
#   packaging/build-deb.sh agent|collector ARCH BINARY [VERSION]
#
# ARCH is the Debian architecture (amd64, arm64, armhf); BINARY the release
# binary built for it; VERSION defaults to the crate's version. Writes
# target/debian/dockline-NAME_VERSION_ARCH.deb and prints its path.
#
# Layout: /usr/bin/dockline-NAME; /etc/dockline/NAME.toml (conffile, every
# device commented out); /lib/systemd/system/dockline-NAME.service;
# /usr/share/doc/dockline-NAME/ (copyright, the annotated example config).
# The maintainer scripts create the `dockline` system user and
# /var/lib/dockline/NAME owned by it; upgrades keep that folder (the outbox
# and inbox migrate their schema at open); purge removes it, per Debian policy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

name="${1:?agent or collector}"
arch="${2:?Debian architecture}"
binary="${3:?the binary to package}"
version="${4:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)}"
pkg="dockline-$name"
case "$name" in
  agent) summary="dockline agent: device events to an SQLite outbox, uploaded over MQTT"
         recommends="" ;;
  collector) summary="dockline collector: MQTT ingest, inbox and exactly-once ERP delivery"
             recommends="Recommends: mosquitto" ;;
  *) echo "unknown package $name (agent or collector)" >&2; exit 2 ;;
esac
[ -x "$binary" ] || { echo "no binary at $binary" >&2; exit 2; }

out="$root/target/debian"
stage="$out/stage-$pkg-$arch"
rm -rf "$stage"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/etc/dockline" \
  "$stage/lib/systemd/system" "$stage/usr/share/doc/$pkg"
install -m 0755 "$binary" "$stage/usr/bin/$pkg"
install -m 0640 "$here/etc/$name.toml" "$stage/etc/dockline/$name.toml"
install -m 0644 "$here/systemd/$pkg.service" "$stage/lib/systemd/system/$pkg.service"
install -m 0644 "$root/README.md" "$stage/usr/share/doc/$pkg/README.md"
install -m 0644 "$root/$name/$name.example.toml" "$stage/usr/share/doc/$pkg/$name.example.toml"
cat > "$stage/usr/share/doc/$pkg/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: dockline
License: Apache-2.0
Files: *
Copyright: the dockline authors
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPY
echo "/etc/dockline/$name.toml" > "$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  sed "s/@NAME@/$name/g" "$here/debian/$script" > "$stage/DEBIAN/$script"
  chmod 0755 "$stage/DEBIAN/$script"
done

# The oldest glibc the binary runs on, from its versioned symbols.
floor=$(readelf -V -W "$binary" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
size_kb=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: dockline maintainers <dockline@example.invalid>
Section: net
Priority: optional
Installed-Size: $size_kb
Depends: libc6 (>= ${floor#GLIBC_}), adduser
${recommends:+$recommends
}Homepage: https://example.invalid/dockline
Description: $summary
 Part of dockline, which moves warehouse and delivery events from devices
 to the ERP without losing or doubling one. Runs as the systemd service
 $pkg.service under the dockline system user, with its config in
 /etc/dockline/$name.toml and its data in /var/lib/dockline/$name.
CONTROL
deb="$out/${pkg}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "$deb"
