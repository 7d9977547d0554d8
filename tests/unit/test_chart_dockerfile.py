"""Static checks of the container build file (no container engine is needed or assumed):
multi-stage, a non-root numeric user in the final stage, no build tools there, a Java >= 21
runtime for Lucene, and a build context that contains exactly what the Dockerfile copies."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions(DOCKERFILE):
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_multi_stage_with_a_java_21_runtime_copied_into_the_final_stage() -> None:
    stages = _stages()
    assert len(stages) >= 3
    names = {re.search(r"\bAS\s+(\S+)", s[0][1], re.I).group(1) for s in stages[:-1]}
    jre = next(s for s in stages if re.search(r"\bAS\s+jre\b", s[0][1], re.I))
    version = int(re.search(r":(\d+)-jre", jre[0][1]).group(1))
    assert version >= 21, "Pyserini's Lucene needs Java >= 21"
    final = stages[-1]
    copies_from = {m.group(1) for op, arg in final if op == "COPY" and (m := re.search(r"--from=(\S+)", arg))}
    assert copies_from == names, f"final stage must take the JRE and the venv from the other stages: {copies_from}"
    env = " ".join(arg for op, arg in final if op == "ENV")
    assert "JAVA_HOME=/opt/java/openjdk" in env


def test_final_stage_runs_as_a_numeric_non_root_user_without_build_tools() -> None:
    final = _stages()[-1]
    users = [arg for op, arg in final if op == "USER"]
    assert users, "final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    # Numeric and non-root: runAsNonRoot can only verify a numeric UID.
    assert uid.isdigit() and int(uid) > 0 and (not gid or int(gid) > 0), users[-1]
    run = " ".join(arg for op, arg in final if op == "RUN")
    for tool in ("gcc", "g++", "build-essential", "make ", "cmake", "git ", "curl", "wget"):
        assert tool not in run, f"{tool.strip()} must not be installed in the final image"
    assert "rm -rf /var/lib/apt/lists/*" in run
    # The chart's default podSecurity.runAsUser must match the image's user.
    import yaml

    values = yaml.safe_load((ROOT / "charts" / "tandem" / "values.yaml").read_text())
    assert values["podSecurity"]["runAsUser"] == int(uid)
    assert values["podSecurity"]["runAsGroup"] == int(gid or uid)


def test_entrypoint_is_the_tandem_command() -> None:
    final = _stages()[-1]
    (entry,) = [arg for op, arg in final if op == "ENTRYPOINT"]
    assert entry == '["tandem"]'
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "tandem" in pyproject["project"]["scripts"]


def test_build_context_holds_what_the_build_copies() -> None:
    """Every COPY source of the build stages exists and passes .dockerignore (an allowlist),
    and the readme pyproject.toml names is among them (its long description)."""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def included(path: str) -> bool:
        keep = True
        for pat in patterns:
            negate = pat.startswith("!")
            pat = pat[1:] if negate else pat
            if fnmatch.fnmatch(path, pat.rstrip("/")) or fnmatch.fnmatch(path.split("/")[0], pat.rstrip("/")):
                keep = negate
        return keep

    sources = []
    for op, arg in _instructions(DOCKERFILE):
        if op == "COPY" and "--from=" not in arg:
            sources += arg.split()[:-1]
    assert sources, "no COPY from the build context"
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("readme")
    if readme:
        assert any(fnmatch.fnmatch(readme, src) for src in sources), "pyproject's readme must be copied"
    for src in sources:
        assert included(src.rstrip("*")), f"COPY source {src} is excluded by .dockerignore"
        if "*" not in src:  # a glob may match nothing; plain sources must exist
            assert (ROOT / src).exists(), f"COPY source {src} does not exist"
    for local in (".venv", ".tandem", ".git", "tests"):
        assert not included(local), f"{local} must stay out of the build context"
