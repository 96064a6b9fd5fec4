# Sourced by .ci/run after the tests: prints the decoder oracles' agreement
# rates (the test run captures them on success). The tests already passed;
# this reruns the two oracle tests from the same debug build (seconds) with
# their output shown.
if [ -n "${DOCKLINE_TEST_BIIP_PYTHON:-}" ] || [ -n "${DOCKLINE_TEST_GPSDECODE:-}" ]; then
  log "oracles: agreement rates"
  # --workspace keeps the test run's feature set, so nothing is rebuilt.
  cargo test -q --workspace --test oracles --test oracle_nmea -- --nocapture 2>&1 |
    grep -E '^(oracle|judged|  )|agree|capture' || true
else
  log "oracles: SKIP: no biip venv or gpsdecode (see .ci/steps/20-decoder-oracles.sh)"
fi
