"""The image's recipe (Dockerfile, lock files, .dockerignore), read as text.

`make image-test` (scripts/image test) builds nothing: it runs the built image as Kubeflow
runs it. These tests check the recipe itself, offline and without a container engine.
"""

from __future__ import annotations

import re
import tomllib

from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
PACKAGE_FILTER = "grep -v -e '^#' -e '^[[:space:]]*$'"


def logical_lines(text: str) -> str:
    """Dockerfile/shell text with backslash continuations joined."""
    return re.sub(r"\\\n\s*", "", text)


def stages() -> list[str]:
    """The Dockerfile's stages, each from its FROM line on."""
    text = logical_lines(DOCKERFILE.read_text())
    return ["FROM" + part for part in re.split(r"^FROM", text, flags=re.M)[1:]]


def lock_entries(name: str) -> dict[str, str]:
    """Package name -> its whole entry (pin, markers, hashes) in a lock file."""
    entries, current = {}, None
    for line in (REPO / name).read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            current = re.split(r"[=;\s]", line, maxsplit=1)[0]
            entries[current] = ""
        if current and line.strip() and not line.lstrip().startswith("#"):
            entries[current] += line + "\n"
    return entries


def packages(name: str) -> list[str]:
    return [line for line in (REPO / "env" / name).read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_the_builder_installs_what_scripts_in_env_installs():
    builder, final = stages()
    in_env = (REPO / "scripts" / "in-env").read_text()
    assert re.match(r"FROM debian:trixie-slim AS builder$", builder, re.M)
    assert re.match(r"FROM debian:trixie-slim$", final, re.M)  # the base import names one
    assert "debian_suite=trixie" in in_env
    # One system package list, filtered the same way.
    assert "COPY env/system-packages.txt " in builder
    assert PACKAGE_FILTER in builder and PACKAGE_FILTER in in_env
    # The same venv and pip command; the image from the runtime lock.
    pip = r"python3 -m venv /opt/venv && /opt/venv/bin/pip install (.*?)-r /opt/project/([\w.-]+)"
    docker_flags, docker_lock = re.search(pip, builder).groups()
    in_env_flags, in_env_lock = re.search(pip, in_env).groups()
    assert set(docker_flags.split()) == set(in_env_flags.split()) - {"--quiet"} == {
        "--require-hashes", "--no-deps"}
    assert (docker_lock, in_env_lock) == ("requirements-runtime.lock", "requirements.lock")
    # pip's settings come in as build secrets (a proxy's CA, a private index), never a layer.
    assert {"--mount=type=secret,id=pip-conf", "--mount=type=secret,id=pip-ca"} <= set(
        builder.split())
    assert "PIP_CONFIG_FILE=/run/secrets/pip-conf" in builder


def test_the_runtime_lock_is_the_full_lock_without_the_dev_tools():
    full, runtime = lock_entries("requirements.lock"), lock_entries("requirements-runtime.lock")
    assert {"tensorflow", "tfx", "kfp"} <= set(runtime)
    for name, entry in runtime.items():
        assert full.get(name) == entry, name  # same pin, markers and hashes
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["dev"]
    dev_names = {re.split(r"[<>=~!\[ ]", d)[0] for d in dev}
    assert {"pytest", "ruff", "moto"} <= dev_names <= set(full) - set(runtime)
    # What only the dev tools pull in stays out too (pytest's iniconfig).
    assert "iniconfig" in set(full) - set(runtime)


def test_the_final_stage_has_no_compilers_and_runs_as_any_uid():
    _, final = stages()
    assert "COPY env/runtime-packages.txt " in final and PACKAGE_FILTER in final
    assert "system-packages.txt" not in final
    runtime, build = set(packages("runtime-packages.txt")), set(packages("system-packages.txt"))
    assert {"python3", "ca-certificates"} <= runtime and not runtime & {"g++", "python3-dev"}
    assert {"g++", "python3-dev"} <= build
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    env = dict(re.findall(r"(\w+)=(\S+)", re.search(r"^ENV (.*)$", final, re.M).group(1)))
    assert env["TF_USE_LEGACY_KERAS"] == "1" and env["PYTHONPATH"] == "/opt/project"
    assert env["PATH"].startswith("/opt/venv/bin:")  # the spec runs `python -m ...`
    # HOME from ENV, not /etc/passwd (an arbitrary uid has no entry), and world-writable.
    assert env["HOME"] == "/home/tfx" and env["KERAS_HOME"].startswith(env["HOME"] + "/")
    assert "chmod 1777 /home/tfx" in final
    assert re.findall(r"^WORKDIR (\S+)$", final, re.M)[-1] == "/opt/project"
    users = re.findall(r"^USER (\S+)$", final, re.M)
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1])  # numeric: runAsNonRoot


def test_dockerignore_lets_through_exactly_what_the_image_needs():
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*"  # an allowlist: .git, outputs, caches and tests stay out
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    copied = set(re.findall(r"^COPY (?!--from)(\S+) ", logical_lines(DOCKERFILE.read_text()),
                            re.M)) - {"."}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    top_level = {p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]}
    # The editable install reads pyproject.toml and its readme.
    needed = copied | top_level | {"pyproject.toml", project["project"]["readme"]}
    assert needed <= allowed
    # Nothing else that exists (an entry for a package not yet in this checkout is harmless).
    assert not {p for p in allowed - needed if (REPO / p).exists()}


def test_the_podman_settings_file_has_both_fixes():
    conf = tomllib.loads((REPO / "env" / "containers.conf").read_text())
    assert conf["engine"]["runtime"] == "runc"
    assert {u.split("=")[0] for u in conf["containers"]["default_ulimits"]} == {"nofile", "nproc"}
