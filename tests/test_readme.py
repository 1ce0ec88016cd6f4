"""Every fenced block of README.md, run as printed, so that the README cannot drift from the code.

One test per block, named after its line and language (``test_block[L123-python]``):

* ``python``: a script of its own, run by this interpreter in an empty temporary folder, on one
  simulated 300 W GPU (``METER_SIMULATE_GPUS=300``), offline (`snippet_env`);
* ``sh``: run with ``bash -eu -o pipefail`` in a temporary folder laid out like the
  repository's root (``examples/``, ``.venv`` = this interpreter's environment, whose ``bin`` is
  first on ``PATH``; ``../shared`` = the repository's neighbour of that name, where the GPU power
  recordings are), with the same environment;
* ``yaml``: parsed; a Prometheus configuration (one with ``scrape_configs``) is also checked
  with ``promtool check config`` (skipped, with the reason, without promtool);
* ``text``: the paths that start its lines exist in the repository.

An HTML comment on the line before a block says how else to run it:

* ``<!-- snippet: skip (REASON) -->``: not run, reported as skipped with REASON;
* ``<!-- snippet: server URL -->``: each command of the block runs on its own, in its own
  process group; it passes when it exits with 0, or while it runs, once URL answers 200 (the
  command is then stopped);
* ``<!-- snippet: pytest -->``: the block is a test module (named by its first line,
  ``# test_name.py``), run by pytest, whose plugin ``meter.testing.plugin`` gives it its fixtures;
* ``<!-- snippet: torchrun N -->``: run by ``torchrun --standalone --nproc-per-node N`` (gloo,
  one simulated GPU per process).

A block that needs the GPU power recordings (it names ``../shared/data/gpu-power-traces``) is
skipped, with the reason, where they are absent.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: Hang guard per block (the slowest here, the two training examples, take about 15 s).
TIMEOUT_S = 600.0
#: How long a server block's command may take to answer its URL.
SERVER_READY_S = 120.0
#: The GPU power recordings, beside the repository (see meter.testing.traces).
TRACES = "../shared/data/gpu-power-traces"
#: A proxy nothing listens on: a block that reaches for the network fails at once.
NO_NETWORK = "http://127.0.0.1:9"

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*snippet:\s*(.*?)\s*-->$")
_SKIP = re.compile(r"^skip \((.+)\)$")
_SERVER = re.compile(r"^server (https?://\S+)$")
_TORCHRUN = re.compile(r"^torchrun ([1-9][0-9]*)$")
LANGUAGES = ("python", "sh", "yaml", "text")
_PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@dataclass(frozen=True)
class Block:
    """A fenced block of the README: where it starts, its language, text and directive."""

    line: int  # of the opening fence, from 1
    lang: str
    text: str
    directive: str | None  # what follows "snippet:" in the comment before it

    @property
    def id(self) -> str:
        return f"L{self.line}-{self.lang or 'plain'}"


def read_blocks(text: str) -> list[Block]:
    """The fenced blocks of a markdown text. Raises ValueError on an unclosed fence, and on a
    snippet comment that is not right before a block."""
    lines = text.splitlines()
    blocks: list[Block] = []
    directive: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        comment = _DIRECTIVE.match(line.strip())
        if comment is not None:
            if directive is not None:
                raise ValueError(f"README.md:{directive[0]}: a snippet comment before no block")
            directive = (i + 1, comment.group(1))
        elif fence is not None:
            indent, lang = fence.groups()
            body: list[str] = []
            start = i
            i += 1
            while i < len(lines) and not re.match(rf"^{re.escape(indent)}```\s*$", lines[i]):
                body.append(lines[i][len(indent) :])
                i += 1
            if i == len(lines):
                raise ValueError(f"README.md:{start + 1}: a block that is never closed")
            text = "\n".join(body) + "\n"
            blocks.append(Block(start + 1, lang, text, directive[1] if directive else None))
            directive = None
        elif line.strip() and directive is not None:
            raise ValueError(f"README.md:{directive[0]}: a snippet comment before no block")
        i += 1
    if directive is not None:
        raise ValueError(f"README.md:{directive[0]}: a snippet comment before no block")
    return blocks


BLOCKS = read_blocks(README.read_text(encoding="utf-8"))


# -- where and how a block runs -----------------------------------------------------------------


def snippet_env(home: Path, gpus: int = 1) -> dict[str, str]:
    """The environment of a block: no ``METER_*`` or pytest settings of the caller's, simulated
    GPUs of 300 W, a fresh home (no idle file, no state of the user's), no network (Hugging Face
    offline, the proxies pointing nowhere but loopback left direct), and this interpreter's
    ``bin`` first on ``PATH`` (``python``, ``meter``, ``torchrun``)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("METER_", "PYTEST_", "XDG_")) and k.lower() not in _PROXIES
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        METER_SIMULATE_GPUS=",".join(["300"] * gpus),
        HOME=str(home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUNBUFFERED="1",
    )
    for name in ("http_proxy", "https_proxy"):
        env[name] = env[name.upper()] = NO_NETWORK
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost,::1"
    return env


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A temporary folder laid out like the repository's root: ``examples``, ``.venv`` (this
    interpreter's environment) and ``../shared`` are links to the real ones."""
    with tempfile.TemporaryDirectory(prefix="meter-readme-") as tmp:
        cwd = Path(tmp) / "repo"
        cwd.mkdir()
        (cwd / "examples").symlink_to(ROOT / "examples")
        (cwd / ".venv").symlink_to(Path(sys.prefix))
        shared = ROOT.parent / "shared"
        if shared.is_dir():
            (Path(tmp) / "shared").symlink_to(shared)
        yield cwd


def run(
    cmd: list[str], cwd: Path, env: dict[str, str], block: Block
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to its end; fail the test, with its output, unless it exits with 0."""
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"README.md:{block.line}: still running after {TIMEOUT_S:.0f} s\n{_tail(exc)}")
    if done.returncode != 0:
        pytest.fail(
            f"README.md:{block.line}: exit code {done.returncode}\n{block.text}\n{_tail(done)}"
        )
    return done


def _tail(done: Any, n: int = 4000) -> str:
    out = done.stdout or ""
    err = done.stderr or ""
    out = out.decode(errors="replace") if isinstance(out, bytes) else out
    err = err.decode(errors="replace") if isinstance(err, bytes) else err
    return f"--- stdout ---\n{out[-n:]}\n--- stderr ---\n{err[-n:]}"


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 (no proxy: it is on this machine)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2.0) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def commands(text: str) -> list[str]:
    """The commands of a shell block: one a line, ``\\`` continuations joined."""
    out: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            out.append(command)
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a command's process group: SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
    with contextlib.suppress(ProcessLookupError):  # what the command left behind
        os.killpg(proc.pid, signal.SIGKILL)


def serve(command: str, url: str, cwd: Path, env: dict[str, str], block: Block) -> None:
    """Run one command of a server block: until it exits (with 0), or until ``url`` answers."""
    if answers(url):
        pytest.fail(f"README.md:{block.line}: {url} already answers before `{command}` runs")
    log = cwd / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-eu", "-o", "pipefail", "-c", command],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVER_READY_S
        while not answers(url):
            code = proc.poll()
            if code == 0:
                return  # a command that ends (a self-test), not a server
            output = log.read_text(errors="replace")[-4000:]
            if code is not None:
                pytest.fail(f"README.md:{block.line}: `{command}` exited with {code}\n{output}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"README.md:{block.line}: `{command}`: {url} did not answer within "
                    f"{SERVER_READY_S:.0f} s\n{output}"
                )
            time.sleep(0.2)
    finally:
        _stop(proc)


def snippet_name(block: Block, default: str) -> str:
    """The file name a block names on its first line (``# test_metered.py``), else ``default``."""
    first = block.text.splitlines()[0] if block.text.strip() else ""
    named = re.fullmatch(r"#\s*([\w.-]+\.py)\s*", first)
    return named.group(1) if named else default


def needs_traces(block: Block) -> None:
    if TRACES in block.text and not (ROOT / TRACES).is_dir():
        pytest.skip(f"needs the GPU power recordings, not found at {(ROOT / TRACES).resolve()}")


# -- per language -------------------------------------------------------------------------------


def run_python(block: Block, directive: str | None) -> None:
    with workdir() as cwd:
        home = cwd.parent / "home"
        if directive == "pytest":
            name = snippet_name(block, "test_snippet.py")
            (cwd / name).write_text(block.text)
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name]
            run(cmd, cwd, snippet_env(home), block)
            return
        script = cwd / snippet_name(block, "snippet.py")
        script.write_text(block.text)
        torchrun = _TORCHRUN.match(directive or "")
        if torchrun is not None:
            n = int(torchrun.group(1))
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            cmd += ["--nproc-per-node", str(n), script.name]
            run(cmd, cwd, snippet_env(home, gpus=n), block)
            return
        if directive is not None:
            raise ValueError(f"README.md:{block.line}: no way to run python as {directive!r}")
        run([sys.executable, script.name], cwd, snippet_env(home), block)


def run_sh(block: Block, directive: str | None) -> None:
    needs_traces(block)
    with workdir() as cwd:
        env = snippet_env(cwd.parent / "home")
        server = _SERVER.match(directive or "")
        if server is not None:
            for command in commands(block.text):
                serve(command, server.group(1), cwd, env, block)
            return
        if directive is not None:
            raise ValueError(f"README.md:{block.line}: no way to run sh as {directive!r}")
        run(["bash", "-eu", "-o", "pipefail", "-c", block.text], cwd, env, block)


def run_yaml(block: Block, directive: str | None) -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    if directive is not None:
        raise ValueError(f"README.md:{block.line}: no way to run yaml as {directive!r}")
    docs = [d for d in yaml.safe_load_all(block.text) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), f"README.md:{block.line}"
    prometheus = [d for d in docs if "scrape_configs" in d]
    for doc in docs:
        if doc not in prometheus:  # a Kubernetes object
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"README.md:{block.line}"
    if not prometheus:
        return
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(
            "promtool is not installed (it ships in Debian's `prometheus` package: "
            "apt-get install prometheus; .ci/run installs it); the YAML parses"
        )
    with tempfile.TemporaryDirectory(prefix="meter-readme-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(block.text)
        done = subprocess.run(
            [promtool, "check", "config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    if done.returncode == 0:
        return
    # Debian builds Prometheus without some service discoveries (kubernetes among them): its
    # promtool does not know their fields, which says nothing about the configuration.
    missing = re.search(
        r"field (\w+_sd_configs) not found in type config\.ScrapeConfig", done.stdout + done.stderr
    )
    if missing is not None:
        pytest.skip(
            f"this promtool was built without `{missing.group(1)}` (Debian leaves some service "
            "discoveries out); the YAML parses"
        )
    pytest.fail(f"README.md:{block.line}: promtool check config failed\n{_tail(done)}")


def run_text(block: Block, directive: str | None) -> None:
    if directive is not None:
        raise ValueError(f"README.md:{block.line}: no way to run text as {directive!r}")
    for line in block.text.splitlines():
        path = line.split()[0] if line.strip() else ""
        assert not path or (ROOT / path).exists(), f"README.md:{block.line}: no {path} here"


RUNNERS = {"python": run_python, "sh": run_sh, "yaml": run_yaml, "text": run_text}


# -- the tests ----------------------------------------------------------------------------------


def test_every_block_has_a_known_language_and_a_well_formed_directive() -> None:
    assert BLOCKS
    for block in BLOCKS:
        where = f"README.md:{block.line}"
        assert block.lang in LANGUAGES, f"{where}: language {block.lang!r}"
        d = block.directive
        if d is None or _SKIP.match(d):
            continue
        if block.lang == "python":
            assert d == "pytest" or _TORCHRUN.match(d), f"{where}: {d!r}"
        elif block.lang == "sh":
            assert _SERVER.match(d), f"{where}: {d!r}"
        else:
            raise AssertionError(f"{where}: a {block.lang} block takes no directive but skip")


def test_the_two_commands_are_skipped_here_as_ci_s_own() -> None:
    """The two commands of "The two commands" are CI's (the test command is .ci/run's last
    line): skipped here, with that reason, rather than run inside the test suite they start."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("## The two commands")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    ours = [b for b in BLOCKS if start < b.line <= end]
    assert [b.lang for b in ours] == ["sh", "sh"]
    assert ours[0].directive is not None and ours[0].directive.startswith("skip (the main job")
    assert ours[1].directive == "skip (CI's own command: .ci/run runs it)"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ours[1].text.strip() in ci.splitlines()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block(block: Block) -> None:
    skip = _SKIP.match(block.directive or "")
    if skip is not None:
        pytest.skip(skip.group(1))
    RUNNERS[block.lang](block, block.directive)


def test_the_runner_reads_directives_and_fences() -> None:
    text = "a\n<!-- snippet: skip (why) -->\n```sh\necho 1\n```\n\n  ```python\n  x = 1\n  ```\n"
    assert read_blocks(text) == [
        Block(3, "sh", "echo 1\n", "skip (why)"),
        Block(7, "python", "x = 1\n", None),
    ]
    with pytest.raises(ValueError, match="before no block"):
        read_blocks("<!-- snippet: skip (why) -->\ntext\n```sh\necho\n```\n")
    with pytest.raises(ValueError, match="never closed"):
        read_blocks("```sh\necho\n")
    assert commands("a \\\n  b\n# c\n\nd  # e\n") == ["a    b", "d  # e"]


# -- links and the licence ----------------------------------------------------------------------


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file: lower case, punctuation
    dropped, spaces as hyphens, ``-1``, ``-2``... after repeats; code blocks skipped."""
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        fenced ^= line.lstrip().startswith("```")
        heading = re.match(r"#{1,6} (.+)", line)
        if fenced or heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        if n:
            seen[f"{slug}-{n}"] = 1
    return set(seen)


def test_every_link_of_the_readme_leads_somewhere() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue  # the network is not checked
        target, _, anchor = link.partition("#")
        path = ROOT / target if target else README
        assert path.exists(), f"README.md links to {link}: no {target}"
        if anchor:
            assert anchor in anchors(path), f"README.md links to {link}: no such heading"


def test_the_licence_is_the_one_pyproject_declares() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^license = \{ text = "Apache-2.0" \}$', pyproject, re.M)
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in licence
    # The embedded data keeps its own terms, and the README says where they are.
    assert (ROOT / "meter" / "carbon" / "data" / "ATTRIBUTION.md").is_file()
    assert "](meter/carbon/data/ATTRIBUTION.md)" in README.read_text(encoding="utf-8")
