"""deployer/core/bundle.py: the target code packed as modules, run by a real python3 -I."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deployer.core.bundle import BundleError, bundle, imports_of, load_order
from deployer.core.release import wrapper_source
from deployer.engine.remote import build_script, isolated

ENTRIES = ("probe", "applier", "wrapper")


@pytest.mark.parametrize("entry", ENTRIES)
def test_each_entry_needs_only_the_standard_library_and_target_modules(entry: str) -> None:
    order = load_order(entry)
    assert order[-1] == entry and order.index("safefs") < order.index(entry)
    if "targetlib" in order:  # targetlib imports safefs: safefs is defined first
        assert order.index("safefs") < order.index("targetlib")


def test_an_import_a_target_does_not_have_is_refused_when_the_bundle_is_built() -> None:
    with pytest.raises(BundleError, match=r"x\.py, line 3: imports yaml, which a target does not have"):
        imports_of("import os\nfrom deployer.remote import safefs\nimport yaml\n", "x.py")
    with pytest.raises(BundleError, match=r"line 1: imports deployer.core.plan"):
        imports_of("from deployer.core.plan import Plan\n", "x.py")
    with pytest.raises(BundleError, match="relative import"):
        imports_of("from . import safefs\n", "x.py")
    assert imports_of("from __future__ import annotations\nimport json\nfrom deployer.remote import safefs, targetlib\n"
                      "from deployer.remote.cronengine import parse\n", "x.py") == ("safefs", "targetlib", "cronengine")


def test_imports_for_the_type_checker_only_are_not_bundled() -> None:
    source = ("from typing import TYPE_CHECKING\nimport typing\nfrom deployer.remote import safefs\n"
              "if TYPE_CHECKING:\n    from deployer.remote.messages import RunRecord\n    import yaml\n"
              "if typing.TYPE_CHECKING:\n    from deployer.remote import probe\nelse:\n    from deployer.remote import targetlib\n")
    assert imports_of(source, "x.py") == ("safefs", "targetlib")
    assert "messages" not in load_order("wrapper")


def test_the_bundled_modules_are_real_modules_compiled_when_imported_and_tracebacks_name_their_file(tmp_path: Path) -> None:
    script = bundle("applier") + (
        "import sys\n"
        "print('deployer.remote.applier' in sys.modules)\n"  # nothing is compiled before it is imported
        "from deployer.remote import applier, safefs, targetlib\n"
        "print(applier.open_dir is safefs.open_dir, targetlib.__name__)\n"
        "targetlib.decode_params('not base64 json')\n")
    done = subprocess.run(isolated("/usr/bin/python3"), input=script.encode(), capture_output=True, cwd=tmp_path)
    assert done.stdout.decode().split() == ["False", "True", "deployer.remote.targetlib"]
    assert done.returncode == 1 and 'deployer/remote/targetlib.py", line' in done.stderr.decode()


def test_a_wrapper_run_without_alerts_never_compiles_the_alerting_modules(tmp_path: Path) -> None:
    assert {"runalerts", "alerts", "metrics", "cronengine"} <= set(load_order("wrapper"))  # carried...
    script = bundle("wrapper") + (
        "import sys\nfrom deployer.remote import wrapper\n"
        "print(sorted(m for m in sys.modules if m.startswith('deployer.')))\n")
    done = subprocess.run(isolated("/usr/bin/python3"), input=script.encode(), capture_output=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == "['deployer.remote', 'deployer.remote.safefs', 'deployer.remote.wrapper']"  # ...not built


def test_the_probe_bundle_answers_from_a_real_isolated_python(tmp_path: Path) -> None:
    script = build_script("probe", {"deploy_home": str(tmp_path / "home"), "paths": [str(tmp_path)]})
    done = subprocess.run(isolated("/usr/bin/python3"), input=script, capture_output=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"ok": true' in done.stdout.decode() and str(tmp_path) in done.stdout.decode()


def test_the_release_run_file_is_the_wrapper_bundle_and_runs_as_a_script(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.write_bytes(wrapper_source())
    assert wrapper_source().startswith(b"#!/usr/bin/env python3\n")
    done = subprocess.run(["/usr/bin/python3", str(run), "--help"], capture_output=True)
    assert done.returncode == 2 and done.stderr == b"usage: run JOB_ID [--trigger cron|manual] [--tee]\n"
