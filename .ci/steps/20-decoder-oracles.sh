# Differential oracles for the device decoders (firmware/tests/oracles.rs):
#  - PyPI biip (GS1 element strings, EAN/UPC, Digital Link) in a venv under target/;
#  - gpsd's gpsdecode (NMEA fix mode) from Debian's gpsd-clients. The package
#    pulls ~80 GUI/plotting dependencies, so only its .deb and the three
#    libraries gpsdecode links (libgps28, libusb-1.0-0, libbluetooth3) are
#    downloaded and unpacked under target/gpsd, behind a wrapper script.
# Sourced by .ci/run (log and apt_install exist). Each oracle that cannot be
# installed logs a SKIP line and its part of the test prints SKIP.
# Measured here: ~10 s for the venv (biip is pure Python), ~2 s for gpsdecode.

ORACLE_VENV="$PWD/target/oracle-venv"
ORACLE_PIN="biip==5.2.0"
if ! command -v python3 >/dev/null 2>&1; then
  log "oracles: SKIP: no python3; the biip oracle tests will print SKIP"
elif "$ORACLE_VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("biip") != "5.2.0")' 2>/dev/null; then
  log "oracles: reusing $ORACLE_VENV ($ORACLE_PIN)"
  export DOCKLINE_TEST_BIIP_PYTHON="$ORACLE_VENV/bin/python"
elif python3 -m venv --clear "$ORACLE_VENV" &&
     "$ORACLE_VENV/bin/pip" install -q --disable-pip-version-check "$ORACLE_PIN"; then
  log "oracles: installed $ORACLE_PIN into $ORACLE_VENV"
  export DOCKLINE_TEST_BIIP_PYTHON="$ORACLE_VENV/bin/python"
else
  log "oracles: SKIP: could not install $ORACLE_PIN; the biip oracle tests will print SKIP"
fi

GPSD_DIR="$PWD/target/gpsd"
if [ -x "$GPSD_DIR/gpsdecode" ] && "$GPSD_DIR/gpsdecode" --version >/dev/null 2>&1; then
  log "oracles: reusing $GPSD_DIR/gpsdecode"
  export DOCKLINE_TEST_GPSDECODE="$GPSD_DIR/gpsdecode"
else
  mkdir -p "$GPSD_DIR/debs"
  if [ -z "${apt_updated:-}" ]; then apt-get update -qq || true; apt_updated=1; fi
  gpsd_unpacked=""
  if (cd "$GPSD_DIR/debs" && apt-get download -qq gpsd-clients libgps28 libusb-1.0-0 libbluetooth3 2>/dev/null); then
    gpsd_unpacked=1
    for deb in "$GPSD_DIR"/debs/*.deb; do
      dpkg -x "$deb" "$GPSD_DIR/root" || gpsd_unpacked=""
    done
  fi
  if [ -n "$gpsd_unpacked" ]; then
    cat > "$GPSD_DIR/gpsdecode" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$GPSD_DIR/root/usr/lib/x86_64-linux-gnu:$GPSD_DIR/root/usr/lib/aarch64-linux-gnu:$GPSD_DIR/root/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$GPSD_DIR/root/usr/bin/gpsdecode" "\$@"
WRAP
    chmod +x "$GPSD_DIR/gpsdecode"
  fi
  if [ -x "$GPSD_DIR/gpsdecode" ] && "$GPSD_DIR/gpsdecode" --version >/dev/null 2>&1; then
    log "oracles: gpsdecode $("$GPSD_DIR/gpsdecode" --version 2>&1 | head -1) unpacked under $GPSD_DIR"
    export DOCKLINE_TEST_GPSDECODE="$GPSD_DIR/gpsdecode"
  else
    log "oracles: SKIP: could not unpack gpsd-clients' gpsdecode; the NMEA oracle test will print SKIP"
  fi
fi
