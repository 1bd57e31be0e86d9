"""Static checks of the Dockerfile and .dockerignore (no Docker engine runs here).

Base images pinned, multi-stage with nothing but the wheel crossing stages, non-root user,
no build tools or secrets in the final image, entry points that exist in the package, a
healthcheck that really probes kopf's liveness endpoint.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import socket
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.helpers.dockerfile_model import Dockerfile, dockerignore_excludes, healthcheck_script as read_healthcheck_script, parse_dockerfile

BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|cmake|git|cargo|rustc|gfortran|"
    r"python3?-dev|libc6?-dev|autoconf|automake|pkg-config)\b")
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)",
                         re.IGNORECASE)
SECRET_VALUE = re.compile(r"(AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{20,}|-----BEGIN [A-Z ]*PRIVATE KEY|"
                          r"xox[baprs]-[A-Za-z0-9-]+|glpat-[A-Za-z0-9_-]{20})")


@pytest.fixture(scope="module")
def dockerfile(repo_root) -> Dockerfile:
    return parse_dockerfile((repo_root / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final(dockerfile):
    return dockerfile.stages[-1]


@pytest.fixture(scope="module")
def pyproject(repo_root) -> dict:
    return tomllib.loads((repo_root / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def healthcheck_script(dockerfile) -> str:
    return read_healthcheck_script(dockerfile)


def test_buildkit_syntax_is_declared(dockerfile):
    # Heredocs and COPY --chmod need the dockerfile frontend 1.4 or newer.
    match = re.fullmatch(r"docker/dockerfile:(\d+)\.(\d+)", dockerfile.directives.get("syntax", ""))
    assert match and (int(match.group(1)), int(match.group(2))) >= (1, 4)


def test_multi_stage_with_named_stages(dockerfile):
    assert len(dockerfile.stages) >= 2
    assert all(stage.name for stage in dockerfile.stages)
    assert dockerfile.stages[-1].name == "runtime"


def test_python_base_is_pinned_to_an_exact_version(dockerfile):
    python_image = dockerfile.global_args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", python_image), \
        f"PYTHON_IMAGE={python_image!r} must name an exact patch release (or a digest)"
    for stage in dockerfile.stages:
        image = dockerfile.resolve(stage.image)
        assert ":" in image.split("/")[-1] or "@sha256:" in image, f"stage {stage.name}: {image}"
        assert not image.endswith(":latest"), f"stage {stage.name} uses :latest"


def test_a_build_argument_selects_the_runtime_base(dockerfile, final):
    assert final.image == "${BASE_IMAGE}"
    assert dockerfile.resolve(final.image) == dockerfile.global_args["PYTHON_IMAGE"]
    install = " ".join(run.args for run in final.all("RUN"))
    # A CUDA PyTorch base keeps its torch; the slim base gets the pinned CPU build.
    assert 'python -c "import torch"' in install
    assert "--index-url" in install and "TORCH_INDEX_URL" in install


def test_torch_pin_matches_the_projects_constraints(repo_root, final):
    pinned = re.search(r"^torch==(\S+)$", (repo_root / "constraints.txt").read_text(), re.MULTILINE)
    args = dict(arg.args.split("=", 1) for arg in final.all("ARG") if "=" in arg.args)
    assert pinned and args["TORCH_VERSION"] == pinned.group(1)


def test_only_the_wheel_crosses_from_the_build_stage(dockerfile, final):
    build_names = {stage.name for stage in dockerfile.stages[:-1]}
    copied = []
    for copy in final.all("COPY"):
        flags, words = copy.flags_and_words()
        if "from" in flags:
            assert flags["from"] in build_names
            copied.extend(words[:-1])
    assert copied == ["/wheels"]


def test_no_build_tools_in_the_final_stage(final):
    for run in final.all("RUN"):
        for command in re.split(r"&&|;|\|\|", run.args):
            if re.search(r"\b(apt-get|apt|apk|yum|dnf|microdnf)\b.*\binstall\b", command):
                assert not BUILD_TOOLS.search(command), f"line {run.line}: {command.strip()}"
            if re.search(r"\bpip3?\b.*\binstall\b", command):
                packages = _pip_requirements(command)
                assert not packages & PYTHON_BUILD_TOOLS, f"line {run.line}: {command.strip()}"


PYTHON_BUILD_TOOLS = {"setuptools", "wheel", "build", "cython", "pybind11", "scikit-build",
                      "meson", "ninja", "cmake"}


def _pip_requirements(command: str) -> set[str]:
    """Distribution names a `pip install` command names (options, files and URLs left out)."""
    words = shlex.split(command.strip())
    words = words[words.index("install") + 1:]
    names, skip_next = set(), False
    for word in words:
        if skip_next:
            skip_next = False
        elif word.startswith("-"):
            skip_next = "=" not in word and word in {"-c", "-r", "--constraint", "--requirement",
                                                     "--index-url", "-i", "--extra-index-url",
                                                     "--target", "-t", "--find-links", "-f"}
        elif not re.match(r"[/.$]|\w+://", word):
            names.add(re.split(r"[\[<>=!~; ]", word, maxsplit=1)[0].lower())
    return names


def test_runs_as_a_non_root_user(final):
    users = final.all("USER")
    assert users, "the final stage never sets USER"
    uid = users[-1].args.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "USER must be a numeric non-root uid (runAsNonRoot)"
    last_user_at = final.instructions.index(users[-1])
    assert not [i for i in final.instructions[last_user_at:] if i.keyword in ("RUN", "ADD")], \
        "nothing may run as root after USER"
    created = " ".join(run.args for run in final.all("RUN"))
    assert f"--uid {uid}" in created, "the USER's uid must exist in /etc/passwd (useradd)"


def test_user_matches_the_charts_security_context(repo_root, final):
    values = yaml.safe_load((repo_root / "charts/autolrs-operator/values.yaml").read_text())
    uid, _, gid = final.all("USER")[-1].args.partition(":")
    context = values["operator"]["podSecurityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))


def test_no_secrets_in_the_image(dockerfile, final, repo_root):
    for stage in dockerfile.stages:
        for instruction in stage.instructions:
            if instruction.keyword in ("ARG", "ENV"):
                for assignment in shlex.split(instruction.args):
                    name = assignment.split("=", 1)[0]
                    assert not SECRET_NAME.search(name), f"line {instruction.line}: {name}"
            if instruction.keyword == "ADD":
                assert not re.search(r"https?://", instruction.args), "ADD must not fetch URLs"
    text = (repo_root / "Dockerfile").read_text()
    assert not SECRET_VALUE.search(text)
    for global_arg in dockerfile.global_args:
        assert not SECRET_NAME.search(global_arg)


def _context_sources(dockerfile: Dockerfile) -> list[str]:
    sources = []
    for stage in dockerfile.stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            flags, words = instruction.flags_and_words()
            if "from" in flags or instruction.heredocs:
                continue
            sources.extend(word.rstrip("/") for word in words[:-1])
    return sources


def test_every_copied_source_exists_and_reaches_the_context(dockerfile, repo_root):
    patterns = (repo_root / ".dockerignore").read_text().splitlines()
    sources = _context_sources(dockerfile)
    assert {"pyproject.toml", "README.md", "constraints.txt", "trainer", "operator"} <= set(sources)
    for source in sources:
        assert (repo_root / source).exists(), f"COPY {source}: missing from the repository"
        assert not dockerignore_excludes(patterns, source), f"COPY {source}: .dockerignore drops it"


@pytest.mark.parametrize("path", [
    ".git/config", ".venv/bin/python", ".tools/bin/helm", ".env", "trainer/.env",
    "tests/unit/test_x.py", "runs/digits/ckpt.pt", "trainer/autolrs/__pycache__/x.cpython-311.pyc",
    "autolrs_operator.egg-info/PKG-INFO", "deploy/key.pem", "charts/autolrs-operator/values.yaml",
])
def test_dockerignore_keeps_out(repo_root, path):
    patterns = (repo_root / ".dockerignore").read_text().splitlines()
    assert dockerignore_excludes(patterns, path)


def test_dockerignore_reader_follows_dockers_rules():
    patterns = ["*", "!src/", "**/__pycache__", "!keep.txt", "keep.txt"]
    assert dockerignore_excludes(patterns, "other.txt")
    assert not dockerignore_excludes(patterns, "src/a/b.py")
    assert dockerignore_excludes(patterns, "src/a/__pycache__/b.pyc")
    assert dockerignore_excludes(patterns, "keep.txt")  # the last matching pattern wins


def test_operator_command_is_kopf_on_the_package(final, repo_root, pyproject):
    (cmd,) = final.all("CMD")
    argv = json.loads(cmd.args)
    assert argv[:2] == ["kopf", "run"]
    module = argv[argv.index("-m") + 1]
    assert module == "autolrs_operator"
    assert "operator" in pyproject["tool"]["setuptools"]["packages"]["find"]["where"]
    assert (repo_root / "operator" / module / "__init__.py").is_file()
    assert any(dep.startswith("kopf") for dep in pyproject["project"]["optional-dependencies"]["operator"])
    install = " ".join(run.args for run in final.all("RUN"))
    assert '[operator]"' in install, "the image must install the operator extra (kopf)"


def test_autolrs_console_script_exists(pyproject, repo_root):
    target = pyproject["project"]["scripts"]["autolrs"]
    module, _, function = target.partition(":")
    relative = Path(*module.split("."))
    candidates = [repo_root / where / relative.with_suffix(".py")
                  for where in pyproject["tool"]["setuptools"]["packages"]["find"]["where"]]
    candidates += [repo_root / where / relative / "__init__.py"
                   for where in pyproject["tool"]["setuptools"]["packages"]["find"]["where"]]
    existing = [path for path in candidates if path.is_file()]
    assert existing, f"[project.scripts] autolrs = {target}: no module file {relative}.py"
    tree = ast.parse(existing[0].read_text())
    assert function in {node.name for node in tree.body
                        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}, \
        f"{existing[0]} defines no function {function}()"


def test_ports_and_healthcheck_match_the_chart(final, repo_root):
    values = yaml.safe_load((repo_root / "charts/autolrs-operator/values.yaml").read_text())
    exposed = {int(port) for expose in final.all("EXPOSE") for port in expose.args.split()}
    assert {values["operator"]["livenessPort"], values["operator"]["metricsPort"]} <= exposed
    (cmd,) = final.all("CMD")
    assert f"--liveness=http://0.0.0.0:{values['operator']['livenessPort']}/healthz" in cmd.args
    env = dict(assignment.split("=", 1) for instruction in final.all("ENV")
               for assignment in shlex.split(instruction.args))
    # The operator serves metrics on AUTOLRS_OPERATOR_METRICS_PORT: never the liveness port.
    assert int(env["AUTOLRS_OPERATOR_METRICS_PORT"]) == values["operator"]["metricsPort"]
    assert values["operator"]["metricsPort"] != values["operator"]["livenessPort"]
    (healthcheck,) = final.all("HEALTHCHECK")
    assert "autolrs-healthcheck" in healthcheck.args
    assert final.instructions.index(healthcheck) > final.instructions.index(final.all("USER")[-1])


# --- the healthcheck script, run for real against stand-in processes ----------------------

# A stand-in for `kopf run ... --liveness=URL`: serves /healthz with the given status on the
# port named in its own command line, which the healthcheck reads from /proc/PID/cmdline.
STAND_IN = textwrap.dedent("""
    import http.server, sys
    status = int(sys.argv[1])
    port = next(int(a.rsplit(":", 1)[1].split("/")[0]) for a in sys.argv if a.startswith("--liveness="))
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()
        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()
""")
IDLE = "import sys, time; print('ready', flush=True); time.sleep(60)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def healthcheck(healthcheck_script, tmp_path):
    """(start, check): start a stand-in process from argv; run the healthcheck on a pid."""
    script = tmp_path / "autolrs-healthcheck"
    script.write_text(healthcheck_script)
    started: list[subprocess.Popen] = []

    def start(code: str, *argv: str) -> int:
        process = subprocess.Popen([sys.executable, "-c", code, *argv],
                                   stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "ready"
        return process.pid

    def check(pid: int) -> int:
        return subprocess.run([sys.executable, str(script), str(pid)],
                              capture_output=True, timeout=20).returncode

    yield start, check
    for process in started:
        process.kill()
        process.wait()


def _kopf(port: int) -> list[str]:
    return ["/usr/local/bin/kopf", "run", "-m", "autolrs_operator",
            f"--liveness=http://0.0.0.0:{port}/healthz"]


def test_healthcheck_passes_while_kopf_liveness_answers_200(healthcheck):
    start, check = healthcheck
    assert check(start(STAND_IN, "200", *_kopf(_free_port()))) == 0


def test_healthcheck_fails_when_kopf_liveness_answers_an_error(healthcheck):
    start, check = healthcheck
    assert check(start(STAND_IN, "500", *_kopf(_free_port()))) == 1


def test_healthcheck_fails_when_kopf_liveness_does_not_listen(healthcheck):
    start, check = healthcheck
    assert check(start(IDLE, *_kopf(_free_port()))) == 1


def test_healthcheck_reads_the_short_liveness_option(healthcheck):
    start, check = healthcheck
    port = _free_port()
    argv = ["/usr/local/bin/kopf", "run", "-L", f"http://0.0.0.0:{port}/healthz",
            f"--liveness=http://0.0.0.0:{port}/healthz"]
    assert check(start(STAND_IN, "200", *argv)) == 0
    assert check(start(IDLE, "kopf", "run", "-L", f"http://:{_free_port()}/healthz")) == 1


def test_healthcheck_leaves_trainer_containers_healthy(healthcheck):
    start, check = healthcheck
    assert check(start(IDLE, "torchrun", "--nproc-per-node=2", "examples/digits.py")) == 0
    assert check(start(IDLE, "/usr/local/bin/kopf", "run", "-m", "autolrs_operator")) == 0


def test_pip_requirement_reader_sees_build_tools():
    command = 'pip install -c /tmp/c.txt --index-url "$URL" "${wheel}[operator]" setuptools==70 Cython'
    assert _pip_requirements(command) == {"setuptools", "cython"}
