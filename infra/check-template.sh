#!/usr/bin/env bash
# Offline checks of the deploy files:
#   1. sam validate (SAM transform) and sam validate --lint on template.yaml
#   2. cfn-lint template.yaml
#   3. pytest: environment-variable drift between template.yaml / events/ / infra/ and the
#      variables the binaries read (tests/test_template_env.py), and the image entrypoint
#      (tests/test_ingress_entrypoint.py).
#
# Tools live in a virtualenv, created or reused idempotently: the first run installs
# aws-sam-cli, cfn-lint, pytest, pytest-timeout and PyYAML from PyPI; later runs need no
# network. Nothing contacts AWS: dummy credentials and a fixed region are set for the SAM CLI.
# The venv is made with the Python 3.11 infra/local/setup.sh provides (infra/local/python.sh);
# a venv left without pip by an earlier failed creation is made again; concurrent runs wait
# for one installer.
#
# Environment:
#   SMTP_RELAY_SAMCLI_VENV  virtualenv location (default ~/.cache/smtp-relay/samcli)
#   PYTHON                  interpreter used to create it (default: as infra/local/setup.sh)
# Exit status: non-zero when any check fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${SMTP_RELAY_SAMCLI_VENV:-$HOME/.cache/smtp-relay/samcli}"
PY="$VENV/bin/python"
# pytest-timeout: tests/pytest.ini sets `timeout`.
PACKAGES=(aws-sam-cli cfn-lint pytest pytest-timeout pyyaml)

installed() {
  "$PY" -c 'import samcli, cfnlint, pytest, pytest_timeout, yaml' 2>/dev/null \
    && [ -x "$VENV/bin/sam" ] && [ -x "$VENV/bin/cfn-lint" ]
}

if ! installed; then
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$VENV.lock"
  flock 9
  if ! installed; then
    if [ ! -x "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
      # shellcheck source=local/python.sh
      source infra/local/python.sh
      python="${PYTHON:-$(find_python)}" || {
        echo "check-template: no Python 3.11 with venv and ensurepip; run infra/local/setup.sh" >&2
        exit 1
      }
      echo "check-template: creating virtualenv $VENV with $python"
      rm -rf "$VENV"
      "$python" -m venv "$VENV"
    fi
    echo "check-template: installing ${PACKAGES[*]} into $VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
  fi
  exec 9>&-
fi

# Offline and deterministic: no real credentials, no metadata service, no telemetry.
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=check-template-dummy-secret
unset AWS_SESSION_TOKEN AWS_PROFILE
export AWS_EC2_METADATA_DISABLED=true SAM_CLI_TELEMETRY=0

status=0
step() {
  local name="$1"
  shift
  echo "check-template: $name"
  if "$@"; then
    echo "check-template: $name: ok"
  else
    echo "check-template: $name: FAILED" >&2
    status=1
  fi
}

step "sam validate" "$VENV/bin/sam" validate --template template.yaml --region us-east-1
step "sam validate --lint" "$VENV/bin/sam" validate --lint --template template.yaml --region us-east-1
step "cfn-lint" "$VENV/bin/cfn-lint" template.yaml
# --noconftest: these tests need no services, whatever tests/conftest.py sets up for the rest.
step "pytest (template drift, entrypoint)" "$PY" -m pytest -q --noconftest -p no:cacheprovider \
  tests/test_template_env.py tests/test_ingress_entrypoint.py

if [ "$status" -eq 0 ]; then
  echo "check-template: all checks passed"
else
  echo "check-template: some checks FAILED" >&2
fi
exit "$status"
