# Sourced by .ci/run after the tests and the release build: builds the amd64
# Debian packages of the agent and the collector from that release build,
# installs them, verifies the units, starts the agent as the packaged user
# with the packaged config and paths (no systemd runs here: setpriv with the
# unit's User=, Group= and SupplementaryGroups=), posts an event, upgrades
# to a package with a bumped version, checks the event survived, and purges.
# Measured: ~10 s on top of the release build.

pkg_test() (
  set -euo pipefail
  arch=$(dpkg --print-architecture)
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
  bumped="$version+ci1"
  rm -rf target/debian
  for name in agent collector; do
    packaging/build-deb.sh "$name" "$arch" "target/release/dockline-$name" "$version" >/dev/null
    packaging/build-deb.sh "$name" "$arch" "target/release/dockline-$name" "$bumped" >/dev/null
  done
  for deb in target/debian/*_"$version"_"$arch".deb; do
    log "packages: $(basename "$deb"): $(stat -c %s "$deb") bytes, depends $(dpkg-deb -f "$deb" Depends)"
  done

  agent_pid=""
  cleanup() {
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
  }
  trap cleanup EXIT

  DEBIAN_FRONTEND=noninteractive dpkg -i target/debian/dockline-agent_"$version"_"$arch".deb \
    target/debian/dockline-collector_"$version"_"$arch".deb >/dev/null
  id dockline >/dev/null
  [ "$(stat -c %U /var/lib/dockline/agent)" = dockline ] || { log "packages: FAIL: /var/lib/dockline/agent is not owned by dockline"; exit 1; }
  if command -v systemd-analyze >/dev/null 2>&1; then
    # Without a running systemd, verify still checks syntax, paths and users.
    out=$(systemd-analyze verify /lib/systemd/system/dockline-agent.service /lib/systemd/system/dockline-collector.service 2>&1 || true)
    if echo "$out" | grep -v -e 'Failed to connect to bus' -e 'Cannot find unit' -e 'multi-user.target' -e 'network-online.target' -e '^$' | grep . >/dev/null; then
      log "packages: FAIL: systemd-analyze verify: $out"; exit 1
    fi
    log "packages: systemd-analyze verify: units ok"
  else
    log "packages: SKIP: no systemd-analyze; units not verified"
  fi

  start_agent() {
    rm -f /var/lib/dockline/agent/api.addr
    # As the unit runs it; the API on a free port so nothing here clashes.
    DOCKLINE_API__LISTEN=127.0.0.1:0 setpriv --reuid=dockline --regid=dockline \
      --groups="$(getent group dockline dialout i2c | cut -d: -f3 | paste -sd,)" \
      --no-new-privs /usr/bin/dockline-agent --config /etc/dockline/agent.toml \
      2> target/debian/agent.log &
    agent_pid=$!
    for _ in $(seq 1 100); do
      [ -s /var/lib/dockline/agent/api.addr ] && break
      sleep 0.1
    done
    [ -s /var/lib/dockline/agent/api.addr ] || { log "packages: FAIL: the agent did not start: $(cat target/debian/agent.log)"; exit 1; }
    api="http://$(cat /var/lib/dockline/agent/api.addr)"
    # The per-install token the agent made at its first start (0600, its
    # user's); root reads it here as an operator would with `dockline-agent token`.
    auth="authorization: Bearer $(cat /var/lib/dockline/agent/api.token)"
  }
  stop_agent() {
    kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=""
  }

  start_agent
  curl -fsS "$api/readyz" >/dev/null
  event_id=$(curl -fsS -X POST -H "$auth" -H 'content-type: application/json' \
    -d '{"detail":{"picked":{"item":"09506000134352","quantity":1}},"refs":{"order":"SO-PKG-1"}}' \
    "$api/v1/events" | sed -n 's/.*"event_id":"\([^"]*\)".*/\1/p')
  [ -n "$event_id" ] || { log "packages: FAIL: no event id from POST /v1/events"; exit 1; }
  sleep 3
  log "packages: agent idle RSS as the packaged user: $(awk '/VmRSS/ {print $2, $3}' /proc/$agent_pid/status)"
  stop_agent

  DEBIAN_FRONTEND=noninteractive dpkg -i target/debian/dockline-agent_"$bumped"_"$arch".deb \
    target/debian/dockline-collector_"$bumped"_"$arch".deb >/dev/null
  [ "$(dpkg-query -W -f '${Version}' dockline-agent)" = "$bumped" ]
  start_agent
  curl -fsS -H "$auth" "$api/v1/events/$event_id" | grep '"state":"queued"' >/dev/null ||
    { log "packages: FAIL: event $event_id did not survive the upgrade"; exit 1; }
  curl -fsS -H "$auth" "$api/metrics" | grep '^dockline_agent_queue_events{class="must_deliver"} 1' >/dev/null ||
    { log "packages: FAIL: /metrics does not show the queued event"; exit 1; }
  stop_agent
  log "packages: event $event_id survived the upgrade to $bumped"

  DEBIAN_FRONTEND=noninteractive dpkg --purge dockline-agent dockline-collector >/dev/null
  [ ! -e /var/lib/dockline/agent ] && [ ! -e /usr/bin/dockline-agent ] && [ ! -e /etc/dockline/agent.toml ] ||
    { log "packages: FAIL: purge left files behind"; exit 1; }
  log "packages: install, upgrade and purge ok"
)

if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null 2>&1; then
  log "packages: SKIP: needs root and dpkg to install the packages"
elif [ ! -x target/release/dockline-agent ] || [ ! -x target/release/dockline-collector ]; then
  log "packages: FAIL: no release binaries to package"; exit 1
else
  pkg_started=$(date +%s)
  # Not `pkg_test || …`: bash ignores set -e inside a function called from an
  # || list, so a failing check would pass unnoticed.
  set +e
  pkg_test
  pkg_rc=$?
  set -e
  [ "$pkg_rc" = 0 ] || { log "packages: FAIL (see above)"; exit 1; }
  log "packages: done in $(( $(date +%s) - pkg_started )) s"
fi
