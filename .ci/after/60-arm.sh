# Sourced by .ci/run after the tests: cross-builds the arm64 agent with
# Debian's rustc-web and the GCC cross linker (scripts/build-arm.sh), checks
# its ELF architecture and glibc floor, and packages it
# (target/debian/dockline-agent_*_arm64.deb). armhf is not built in CI (the
# same script takes `armhf`; another ~4 min of CI). Then a smoke test of the
# arm64 agent under qemu-user: start it, post an event, check readiness, stop
# it with SIGTERM, and `doctor check` its outbox. qemu runs it against the
# multiarch libc6:arm64 (no -L): with -L /usr/aarch64-linux-gnu (the cross
# sysroot) it hangs at its first thread (see the README's "ARM builds").

arm_smoke() (
  set -euo pipefail
  command -v qemu-aarch64 >/dev/null 2>&1 || apt_install --no-install-recommends qemu-user >/dev/null
  bin=target/cross/aarch64-unknown-linux-gnu/release/dockline-agent
  dir=$PWD/target/arm64-smoke
  rm -rf "$dir" && mkdir -p "$dir"
  printf 'site = "ci"\ndevice = "gw-arm64"\ndata_dir = "%s/data"\n[api]\nlisten = "127.0.0.1:0"\n[mqtt]\nport = 1883\n' "$dir" > "$dir/agent.toml"
  qemu-aarch64 "$bin" -c "$dir/agent.toml" 2> "$dir/agent.log" &
  pid=$!
  trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 150); do [ -s "$dir/data/api.addr" ] && break; sleep 0.2; done
  [ -s "$dir/data/api.addr" ] || { log "arm64: FAIL: the agent under qemu did not start: $(tail -3 "$dir/agent.log")"; exit 1; }
  api="http://$(cat "$dir/data/api.addr")"
  auth="authorization: Bearer $(cat "$dir/data/api.token")"
  curl -fsS -X POST -H "$auth" -H 'content-type: application/json' \
    -d '{"detail":{"picked":{"item":"09506000134352","quantity":1}},"refs":{"order":"SO-ARM-1"}}' \
    "$api/v1/events" | grep '"state":"queued"' >/dev/null
  curl -fsS "$api/readyz" | grep '"ready":true' >/dev/null
  kill -TERM "$pid"; wait "$pid"; trap - EXIT
  qemu-aarch64 "$bin" doctor --data-dir "$dir/data" check > "$dir/doctor.txt"   # exit 0: healthy
  log "arm64: smoke test under $(qemu-aarch64 --version | head -1): started, event posted, clean stop, doctor check healthy"
)

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  log "arm64: SKIP: needs root and apt-get to install the cross toolchain"
else
  arm_started=$(date +%s)
  if bash scripts/build-arm.sh arm64 --deb > target/arm64-build.log 2>&1; then
    grep '^\[build-arm\]' target/arm64-build.log | while read -r line; do log "arm64: $line"; done
    for deb in target/debian/dockline-agent_*_arm64.deb; do
      [ -e "$deb" ] && log "arm64: $(basename "$deb"): $(stat -c %s "$deb") bytes"
    done
    # Not `if arm_smoke`: bash ignores set -e inside a function called as a
    # condition, so a failing check would pass unnoticed.
    set +e
    arm_smoke
    smoke_rc=$?
    set -e
    [ "$smoke_rc" = 0 ] || { log "arm64: FAIL: smoke test under qemu (log: target/arm64-smoke/agent.log)"; exit 1; }
    log "arm64: done in $(( $(date +%s) - arm_started )) s"
  elif grep -q -e 'Unable to locate package' -e 'Failed to fetch' -e 'Temporary failure resolving' target/arm64-build.log; then
    log "arm64: SKIP: the cross toolchain could not be installed: $(grep -m1 -e 'Unable to locate' -e 'Failed to fetch' -e 'Temporary failure' target/arm64-build.log)"
  else
    tail -30 target/arm64-build.log
    log "arm64: FAIL: the cross build failed (log above, full log in target/arm64-build.log)"
    exit 1
  fi
fi
