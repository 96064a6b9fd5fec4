# --- OpenAPI: PyPI openapi-spec-validator for agent/tests/openapi.rs ---
# A virtualenv under target/ (kept between runs) with the validator pinned;
# the test validates the agent's /v1/openapi.json (OpenAPI 3.1) with it.
# Without python3 or the package the test prints SKIP.
OPENAPI_VENV="$PWD/target/openapi-venv"
OPENAPI_PIN="openapi-spec-validator==0.7.2"
if ! command -v python3 >/dev/null 2>&1; then
  log "openapi: SKIP: no python3; agent/tests/openapi.rs will print SKIP"
elif [ -x "$OPENAPI_VENV/bin/python" ] && "$OPENAPI_VENV/bin/python" -c 'import openapi_spec_validator' 2>/dev/null; then
  log "openapi: reusing $OPENAPI_VENV"
  export DOCKLINE_TEST_OPENAPI_PYTHON="$OPENAPI_VENV/bin/python"
else
  started=$(date +%s)
  if python3 -m venv --clear "$OPENAPI_VENV" 2>/dev/null &&
     "$OPENAPI_VENV/bin/pip" install -q --disable-pip-version-check "$OPENAPI_PIN"; then
    log "openapi: installed $OPENAPI_PIN in $(( $(date +%s) - started )) s"
    export DOCKLINE_TEST_OPENAPI_PYTHON="$OPENAPI_VENV/bin/python"
  else
    log "openapi: SKIP: could not install $OPENAPI_PIN; agent/tests/openapi.rs will print SKIP"
  fi
fi
