"""The bad-inputs corpus: every malformed declaration in tests/bad_inputs/ exits 2 with
exactly the expected error lines, prints nothing on stdout, and touches no target: no
process is started and no socket opened while it runs, and the current user's crontab and
deployer's data folders are unchanged. A case whose target cannot be reached exits 4 with
the host's report, after trying to connect and nothing else.

One case = one file ``tests/bad_inputs/NN-short-name.yml``: the whole file is written as
the project's ``deployer.yml`` (so the line numbers in its expected messages are the
lines of the case file itself), beside a copy of ``tests/bad_inputs/skeleton/``. Its
leading comment lines carry the directives:

    # command: plan dev          the deployer command (default: validate)
    # unset-env: NAME            an environment variable that must not be set
    # xfail: why                 the message is wrong today; expect lines say what it should be
    # expect: <stderr line>      every stderr line, in order; {root} is the project folder
    # exit: 4                    a target that cannot be reached (default 2, invalid input): the
                                 expect lines then open stdout (the host's own report), and
                                 trying to connect is the one contact allowed
    # ssh-key: key               made (ssh-keygen) in the project before the case runs

Other leading comment lines (the first one says what the case is about) are ignored.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from deployer.cli.main import cli

if TYPE_CHECKING:
    from _pytest.mark import ParameterSet  # what pytest.param returns; pytest exports no public name for it

CORPUS = Path(__file__).resolve().parents[1] / "bad_inputs"
SKELETON = CORPUS / "skeleton"
DIRECTIVES = ("command", "unset-env", "xfail", "expect", "exit", "ssh-key")
SUMMARY = re.compile(r"^\d+ problems? found; nothing was changed on any target\.$")


class Case:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.content = path.read_bytes()
        self.command = "validate"
        self.unset_env: list[str] = []
        self.xfail: str | None = None
        self.expect: list[str] = []
        self.exit = 2
        self.ssh_key: str | None = None
        # Only the leading comment block holds directives; a non-UTF-8 case still has an ASCII header.
        for line in self.content.decode("utf-8", errors="replace").splitlines():
            if not line.startswith("#"):
                break
            key, sep, value = line[1:].strip().partition(":")
            if not sep or key not in DIRECTIVES:
                continue
            value = value.strip()
            if key == "command":
                self.command = value
            elif key == "unset-env":
                self.unset_env.append(value)
            elif key == "xfail":
                self.xfail = value
            elif key == "exit":
                self.exit = int(value)
            elif key == "ssh-key":
                self.ssh_key = value
            else:
                self.expect.append(value)


def _cases() -> list[ParameterSet]:
    params = []
    for path in sorted(CORPUS.glob("*.yml")):
        case = Case(path)
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        params.append(pytest.param(case, id=path.name, marks=marks))
    return params


CASES = _cases()


def test_corpus_is_well_formed() -> None:
    """At least 30 cases, each with expect lines that end with the summary line."""
    assert len(CASES) >= 30
    for param in CASES:
        case = param.values[0]
        assert isinstance(case, Case)
        assert re.fullmatch(r"\d{2,3}-[a-z0-9-]+\.yml", case.path.name), case.path.name
        assert case.expect, f"{case.path.name}: no '# expect:' line"
        if case.exit != 2:
            continue
        assert SUMMARY.match(case.expect[-1]), f"{case.path.name}: the last expect line is not the summary line"
        count = int(case.expect[-1].split()[0])
        assert count == len(case.expect) - 1, f"{case.path.name}: the summary says {count} problems"


# ----------------------------------------------------------------------------- targets


def _crontab() -> str:
    """The current user's crontab, exactly as `crontab -l` prints it (or why there is none)."""
    if shutil.which("crontab") is None:
        return "(crontab is not installed)"
    result = subprocess.run(["crontab", "-l"], capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else f"(no crontab: exit {result.returncode})"


def _deploy_dirs() -> list[Path]:
    # deployer finds the home of local targets with pwd, not $HOME; its data root is
    # ~/.local/share for a user and /var/lib for root.
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    return [home / ".local" / "share" / "deployer", Path("/var/lib/deployer")]


def _listing(root: Path) -> list[tuple[str, int, int]]:
    if not root.exists():
        return []
    entries = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        entries.append((str(path.relative_to(root)), st.st_size if path.is_file() else -1, st.st_mtime_ns))
    return entries


def _targets_snapshot() -> dict[str, object]:
    snapshot: dict[str, object] = {"crontab -l": _crontab()}
    for directory in _deploy_dirs():
        snapshot[str(directory)] = _listing(directory)
    return snapshot


# Every way a target can be reached starts one of these in this process: the local and Incus
# transports start a process (subprocess.Popen), SSH opens a socket (socket.connect). The CLI
# runs in-process (CliRunner), so an audit hook sees every attempt, on any thread; the
# snapshots above only see the local user's own state.
REACHING_OUT = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                "socket.connect"}
_reaching_out: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _reaching_out is not None and event in REACHING_OUT:
        if event in ("subprocess.Popen", "os.posix_spawn") and args[0] == "/sbin/ldconfig":
            # ctypes.util.find_library, run by a lazy import: looks up a shared library, reaches no
            # target (Python 3.13, Debian 13's, starts it with posix_spawn: a second event)
            return
        _reaching_out.append(f"{event} {args!r}"[:300])


sys.addaudithook(_audit)  # for the whole process (hooks cannot be removed); it records only while a case runs


# ----------------------------------------------------------------------------- the test


def _runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        return CliRunner()  # click >= 8.2: result.stderr is always separate


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path.resolve()
    shutil.copytree(SKELETON, root, dirs_exist_ok=True)
    declaration = root / "deployer.yml"
    declaration.write_bytes(case.content)
    home = root / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # keeps ansible's own files out of the real home
    monkeypatch.delenv("DEPLOYER_FILE", raising=False)
    for name in case.unset_env:
        monkeypatch.delenv(name, raising=False)
    if case.ssh_key:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / case.ssh_key)], check=True)
        monkeypatch.chdir(root)  # a relative ansible_ssh_private_key_file is relative to where one runs, as in Ansible

    global _reaching_out
    before = _targets_snapshot()
    _reaching_out = []
    try:
        result = _runner().invoke(cli, ["--no-color", "-f", str(declaration), *case.command.split()], catch_exceptions=False)
    finally:
        attempts, _reaching_out = _reaching_out, None
    after = _targets_snapshot()

    expected = [line.replace("{root}", str(root)) for line in case.expect]
    assert after == before, "a target was touched"
    assert result.exit_code == case.exit
    if case.exit == 2:
        assert result.stderr.splitlines() == expected
        assert result.stdout == ""
        assert attempts == [], "a target was contacted (a process started or a socket opened)"
    else:
        assert [line.strip() for line in result.stdout.splitlines()[:len(expected)]] == expected
        assert result.stderr == ""
        assert attempts and all(a.startswith("socket.connect") for a in attempts), attempts


def test_the_contact_check_sees_a_real_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit hook is not blind: a valid plan on the skeleton's local target (read-only:
    one probe of this machine) is recorded as contact."""
    global _reaching_out
    root = tmp_path.resolve()
    shutil.copytree(SKELETON, root, dirs_exist_ok=True)
    (root / "deployer.yml").write_text("project: demo\njobs:\n  hello:\n    script: tasks/hello.py\n"
                                       "    schedule: \"*/5 * * * *\"\nenvironments:\n  dev:\n    inventory: inventories/dev\n")
    monkeypatch.setenv("HOME", str(root))
    _reaching_out = []
    try:
        result = _runner().invoke(cli, ["--no-color", "-f", str(root / "deployer.yml"), "plan", "dev"], catch_exceptions=False)
    finally:
        attempts, _reaching_out = _reaching_out, None
    assert result.exit_code == 0, result.stderr
    assert any(a.startswith("subprocess.Popen") for a in attempts), attempts
