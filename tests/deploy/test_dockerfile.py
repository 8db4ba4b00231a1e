"""The Dockerfile without a Docker engine: hadolint, the command/port/health check against the app, the files it
copies, the layer order, and its inline Python snippets run here for real."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import subprocess

from tests.deploy.common import (
    APP_PORT,
    DOCKERFILE,
    ROOT,
    env_of,
    healthcheck_exit_code,
    parse_dockerfile,
    setting_default,
    setting_env_names,
    tool,
)


def _final(dockerfile):
    stages, _ = dockerfile
    return stages[-1]


def _hadolint(path) -> subprocess.CompletedProcess:
    cmd = [tool("hadolint"), "--no-color", "--failure-threshold", "style", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_hadolint_finds_nothing():
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_is_really_linting(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = _hadolint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout, result.stdout + result.stderr


def test_default_target_is_the_server(dockerfile):
    final = _final(dockerfile)
    assert final.name == "runtime"
    entrypoint = final.last("ENTRYPOINT").exec_form() or []
    cmd = final.last("CMD").exec_form()
    assert cmd is not None, "CMD must be exec form so that SIGTERM reaches the server"
    # tini as PID 1 forwards SIGTERM; without it the server itself must be PID 1 (exec form, no shell).
    assert entrypoint in ([], ["tini", "--"]), entrypoint
    assert cmd in (["python", "-m", "service"], ["uvicorn", "service.app:app"]) or cmd[:2] == [
        "uvicorn", "service.app:app"], cmd


def test_the_command_exists_in_the_app(dockerfile):
    cmd = _final(dockerfile).last("CMD").exec_form()
    module = "service.__main__" if cmd[:3] == ["python", "-m", "service"] else "service.app"
    assert importlib.util.find_spec(module) is not None, f"{module} does not exist, so the image's CMD {cmd} cannot run"


def test_port_agrees_everywhere(dockerfile):
    stages, _ = dockerfile
    final = _final(dockerfile)
    exposed = [int(p.split("/")[0]) for i in final.all("EXPOSE") for p in i.args.split()]
    env = env_of(stages, final.name)
    assert exposed == [APP_PORT]
    assert int(env.get("LATENTSERVE_PORT", setting_default("LATENTSERVE_PORT"))) == APP_PORT
    assert setting_default("LATENTSERVE_PORT") == APP_PORT
    assert env.get("LATENTSERVE_HOST", setting_default("LATENTSERVE_HOST")) == "0.0.0.0"


def test_env_names_only_real_settings(dockerfile):
    stages, _ = dockerfile
    known = setting_env_names()
    for stage in stages:
        for key in env_of(stages, stage.name):
            if key.startswith("LATENTSERVE_"):
                assert key in known, f"ENV {key} in stage {stage.name} is not a field of service.settings.Settings"


def test_runs_as_a_numeric_non_root_user(dockerfile):
    stages, _ = dockerfile
    for stage in stages:
        if stage.name in {"runtime", "train"}:
            user = stage.last("USER")
            assert user is not None, f"stage {stage.name} runs as root"
            uid = user.args.split(":")[0]
            assert uid.isdigit() and int(uid) != 0, f"USER {user.args}: numeric so runAsNonRoot can check it"


def test_stages_referenced_exist(dockerfile):
    stages, global_args = dockerfile
    names = [s.name for s in stages]
    for index, stage in enumerate(stages):
        base = stage.base
        if base.startswith("${"):
            base = global_args[base.strip("${}")]
        assert base in names[:index] or ":" in base, f"stage {stage.name}: base {base} is unknown or has no tag"
        for copy in stage.all("COPY"):
            source = copy.flags()[0].get("from")
            assert source is None or source in names[:index], f"line {copy.line}: COPY --from={source}"


def _copy_sources(dockerfile) -> list[tuple[int, str]]:
    stages, _ = dockerfile
    found = []
    for stage in stages:
        for copy in stage.all("COPY") + stage.all("ADD"):
            opts, words = copy.flags()
            if "from" not in opts:
                found += [(copy.line, src) for src in words[:-1]]
    return found


def test_every_copied_path_exists_and_is_in_the_context(dockerfile):
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", ".dockerignore is an allow-list: `*`, then one `!path` per copied path"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = _copy_sources(dockerfile)
    assert sources
    for line, src in sources:
        path = ROOT / src
        assert path.exists(), f"line {line}: COPY {src} but it is not in the repository"
        assert not path.is_dir() or any(p.name != ".gitkeep" for p in path.rglob("*")), f"COPY {src}: empty folder"
        assert src.rstrip("/") in allowed, f"line {line}: {src} is excluded by .dockerignore"


def test_dockerignore_keeps_bulk_out():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    reincluded = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for bulky in (".venv", ".git", "data", "bench/out", ".pytest_cache", "tests"):
        assert not any(fnmatch.fnmatch(bulky, p) or bulky.startswith(p + "/") for p in reincluded), bulky


def test_image_carries_the_default_model(dockerfile):
    stages, _ = dockerfile
    env = env_of(stages, "runtime")
    # destination -> source, for each COPY from the build context
    copied = {c.flags()[1][-1].rstrip("/"): c.flags()[1][0].rstrip("/")
              for s in stages for c in s.all("COPY") if "from" not in c.flags()[0]}
    artifacts_dir = env["LATENTSERVE_ARTIFACTS_DIR"].rstrip("/")
    assert artifacts_dir in copied, f"nothing is copied to LATENTSERVE_ARTIFACTS_DIR={artifacts_dir}"
    default_model = setting_default("LATENTSERVE_DEFAULT_MODEL")
    manifests = list((ROOT / copied[artifacts_dir] / default_model).glob("*/manifest.json"))
    assert manifests, f"no committed version of the default model {default_model!r} for the image to serve"


def test_dependencies_are_installed_before_the_source_is_copied(dockerfile):
    stages, _ = dockerfile
    builder = next(s for s in stages if s.name == "builder")
    order = [(i.keyword, i.args) for i in builder.instructions]
    install_deps = next(n for n, (k, a) in enumerate(order) if k == "RUN" and "-r requirements/runtime.txt" in a)
    first_source = next(n for n, (k, a) in enumerate(order) if k == "COPY" and a.split()[0] in {"lvm/", "service/"})
    install_project = next(n for n, (k, a) in enumerate(order) if k == "RUN" and "pip install --no-deps ." in a)
    assert install_deps < first_source < install_project


def _pip_installs(stage) -> list[str]:
    return [run.args for run in stage.all("RUN") if "install" in run.args and " -r " in run.args]


def test_every_install_is_from_a_lock_with_hashes(dockerfile):
    stages, _ = dockerfile
    by_name = {s.name: s for s in stages}
    locks = {"builder": "requirements/runtime.txt", "train-builder": "requirements/train.txt"}
    for name, lock in locks.items():
        installs = _pip_installs(by_name[name])
        assert len(installs) == 1 and f"-r {lock}" in installs[0], installs
        assert "--require-hashes" in installs[0] and "--no-deps" in installs[0], installs[0]
        assert (ROOT / lock).is_file()
    copied = [w for c in by_name["builder"].all("COPY") for w in c.flags()[1][:-1]]
    assert set(locks.values()) <= set(copied)


def test_no_syntax_directive_and_no_pinned_debian_revision():
    text = DOCKERFILE.read_text()
    assert not text.startswith("# syntax="), "BuildKit would fetch the frontend image from Docker Hub"
    assert not re.search(r"apt-get install[^&]*=\S*[-+]", text), "a Debian revision pin stops installing once replaced"


def test_healthcheck_probes_healthz_and_fails_on_error(dockerfile):
    healthcheck = _final(dockerfile).last("HEALTHCHECK")
    opts, _ = healthcheck.flags()
    argv = healthcheck.args[healthcheck.args.index("CMD") + 3:].strip()
    command = parse_dockerfile(f"FROM x\nCMD {argv}\n")[0][0].last("CMD").exec_form()
    assert command is not None and "/healthz" in command[-1]
    assert healthcheck_exit_code(command, 200) == 0
    assert healthcheck_exit_code(command, 503) != 0
    assert set(opts) >= {"interval", "timeout", "start-period"}


def test_the_app_has_the_paths_the_deploy_files_probe():
    from service.app import create_app

    paths = set(create_app().openapi()["paths"])
    assert {"/healthz", "/readyz", "/metrics", "/admin/reload"} <= paths
