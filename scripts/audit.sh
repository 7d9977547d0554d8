#!/usr/bin/env bash
# Dependency audit: pip-audit over the installed environment, minus the advisories accepted
# (with a justification each) in security/pip-audit-allowlist.toml.
#
#   bash scripts/audit.sh            # audit the active environment
#   AUDIT_JSON=report.json bash scripts/audit.sh   # judge an existing pip-audit JSON report
#
# Exit codes: 0 = no unaccepted advisory; 1 = unaccepted advisories (listed) or an expired
# or malformed allowlist entry; 3 = the audit could not run: no vulnerability service
# reachable (network-less machine), or pip-audit missing. CI treats 3 as "skipped, with a
# reason", never as a pass: the reason is printed.
#
# A service that answers "not found" for (almost) every package is treated as unreachable
# too: pip-audit then reports "No known vulnerabilities found" although it checked nothing,
# which is the failure mode this script exists to catch.
set -euo pipefail
cd "$(dirname "$0")/.."
ALLOWLIST="${AUDIT_ALLOWLIST:-security/pip-audit-allowlist.toml}"
SERVICE="${AUDIT_SERVICE:-pypi}"   # pypi (PyPI JSON API) or osv (api.osv.dev)
PY="${PYTHON:-python}"

report="${AUDIT_JSON:-}"
if [[ -z "$report" ]]; then
  if ! "$PY" -m pip_audit --version >/dev/null 2>&1; then
    echo "audit skipped: pip-audit is not installed (pip install -e '.[test]')" >&2
    exit 3
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  report="$tmp/report.json"
  set +e
  timeout "${AUDIT_TIMEOUT_S:-600}" "$PY" -m pip_audit --progress-spinner off --skip-editable \
      --vulnerability-service "$SERVICE" --format json --output "$report" 2>"$tmp/stderr"
  rc=$?
  set -e
  if [[ ! -s "$report" ]]; then
    if grep -qiE "ConnectionError|NameResolution|Max retries|timed out|Network is unreachable" "$tmp/stderr" \
        || [[ $rc -eq 124 ]]; then
      echo "audit skipped: vulnerability service '$SERVICE' unreachable:" >&2
      grep -iE "Error" "$tmp/stderr" | tail -1 >&2 || true
      exit 3
    fi
    echo "pip-audit failed (exit $rc):" >&2
    tail -20 "$tmp/stderr" >&2
    exit 1
  fi
fi

"$PY" - "$report" "$ALLOWLIST" "$SERVICE" <<'PY'
import datetime as dt
import json
import sys
import tomllib

report, allowlist, service = sys.argv[1:4]
deps = json.load(open(report, encoding="utf-8"))["dependencies"]
with open(allowlist, "rb") as fh:
    accepted = tomllib.load(fh).get("accepted", [])

problems = []
today = dt.date.today()
allowed = {}
for n, entry in enumerate(accepted):
    missing = [k for k in ("id", "package", "reason", "review_by") if not entry.get(k)]
    if missing:
        problems.append(f"allowlist entry {n} lacks {missing}")
        continue
    if len(str(entry["reason"]).split()) < 8:
        problems.append(f"allowlist entry {entry['id']}: the reason must say why Tandem is not affected")
    review = entry["review_by"]
    if not isinstance(review, dt.date) or review < today:
        problems.append(f"allowlist entry {entry['id']}: review_by {review} has passed; review it again")
    allowed[(str(entry["package"]).lower(), entry["id"])] = entry

audited = [d for d in deps if "skip_reason" not in d]
not_found = [d for d in deps if "not found on PyPI" in d.get("skip_reason", "")]
if deps and len(not_found) > len(deps) / 2:
    print(f"audit skipped: vulnerability service '{service}' answered 'not found' for {len(not_found)} of "
          f"{len(deps)} packages (no index reachable for it); nothing was checked", file=sys.stderr)
    sys.exit(3)

found, accepted_hits = [], []
for d in audited:
    for v in d.get("vulns", []):
        ids = {v["id"], *v.get("aliases", [])}
        hit = next((allowed[(d["name"].lower(), i)] for i in ids if (d["name"].lower(), i) in allowed), None)
        line = f"{d['name']} {d['version']}: {v['id']} (fix: {', '.join(v.get('fix_versions', [])) or 'none'})"
        (accepted_hits if hit else found).append(line)

print(f"audited {len(audited)} packages with '{service}'; skipped {len(deps) - len(audited)}; "
      f"advisories: {len(found)} open, {len(accepted_hits)} accepted")
for line in accepted_hits:
    print(f"  accepted  {line}")
for line in found:
    print(f"  OPEN      {line}")
for p in problems:
    print(f"  ALLOWLIST {p}")
sys.exit(1 if found or problems else 0)
PY
