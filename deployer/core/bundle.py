"""The code that runs on a target, as one self-contained Python script.

The target side (``deployer/remote/``) is made of real modules with real imports, so that
linters, type checkers and unit tests read them as they are. A target needs nothing
installed but python3, so at send time the modules a piece of target code imports are
packed into one script, each kept a module of its own under its own name: the script holds
their sources and puts a finder first on ``sys.meta_path`` that serves ``deployer``,
``deployer.remote`` (empty packages) and each module, compiled when it is first imported.
The modules' own ``from deployer.remote import safefs`` lines find them through the normal
import system, and a run compiles only what it imports (the wrapper of a job without alerts
never builds the alerting modules it carries). Tracebacks name the real file and line
(``deployer/remote/applier.py``, line 212), which splicing text never did.

Ansible's module_utils and pyinfra's facts solve the same problem the same way: the
controller owns the code, the target receives it whole with each run.

A target module may import the standard library and other target modules, nothing else:
anything else is refused here, when the bundle is built, not on a production host.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from importlib import resources

PACKAGE = "deployer.remote"

_PROLOGUE = '''\
# deployer target code: {entry} and the modules it imports, each a module of its own.
# Built by deployer (deployer/core/bundle.py) from its own sources; edit those, not this.
import sys as _sys
from importlib.machinery import ModuleSpec as _ModuleSpec

_deployer_sources = {{}}


class _DeployerModules:
    """Finds deployer's target modules in this script: each is compiled when first imported,
    so a run pays only for the modules it uses (a job without alerts never builds them)."""

    def find_spec(self, name, path=None, target=None):
        if name in ("deployer", "deployer.remote"):
            return _ModuleSpec(name, self, origin="<deployer>", is_package=True)
        if name in _deployer_sources:
            return _ModuleSpec(name, self, origin="<deployer>/" + name.replace(".", "/") + ".py")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        source = _deployer_sources.get(module.__name__)
        if source is not None:
            module.__file__ = module.__spec__.origin
            exec(compile(source, module.__file__, "exec"), module.__dict__)


_sys.meta_path.insert(0, _DeployerModules())
'''


class BundleError(RuntimeError):
    """A target module imports something a target may not have: a bug of deployer's."""


@cache
def module_source(name: str) -> str:
    """The source of ``deployer/remote/<name>.py``."""
    return resources.files(PACKAGE).joinpath(f"{name}.py").read_text(encoding="utf-8")


@cache
def target_imports(name: str) -> tuple[str, ...]:
    """The other target modules that ``deployer/remote/<name>.py`` imports, in the order they appear."""
    return imports_of(module_source(name), f"deployer/remote/{name}.py")


def imports_of(source: str, shown: str) -> tuple[str, ...]:
    """The target modules a target module's ``source`` imports (``shown`` names it in errors).

    Raises BundleError for an import that is neither the standard library nor a target module:
    a target has python3 and nothing else.
    """
    found: list[str] = []
    for node in _runtime_nodes(ast.parse(source, filename=shown)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from deployer.remote import safefs` names modules; `from json import loads` a module's names
            modules = [f"{PACKAGE}.{alias.name}" for alias in node.names] if node.module == PACKAGE else [node.module]
        elif isinstance(node, ast.ImportFrom):
            raise BundleError(f"{shown}, line {node.lineno}: a relative import is not bundled; "
                              f"write `from {PACKAGE} import ...`")
        else:
            continue
        for module in modules:
            top = module.partition(".")[0]
            if module.startswith(PACKAGE + "."):
                child = module[len(PACKAGE) + 1:].partition(".")[0]
                if child not in found:
                    found.append(child)
            elif top != "__future__" and top not in sys.stdlib_module_names:
                raise BundleError(f"{shown}, line {node.lineno}: imports {module}, which a target does not have "
                                  f"(standard library and {PACKAGE} only)")
    return tuple(found)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:``: imports for the type
    checker only are not bundled (the wrapper needs nothing of messages.py to run a job, and a
    change to a message must not change the bytes of every release's ``run``)."""
    nodes: list[ast.AST] = []

    def visit(node: ast.AST) -> None:  # in source order
        nodes.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children: list[ast.AST] = list(node.orelse)
        else:
            children = list(ast.iter_child_nodes(node))
        for child in children:
            visit(child)

    visit(tree)
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def load_order(entry: str) -> tuple[str, ...]:
    """``entry`` and every target module it needs, each after the modules it imports."""
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise BundleError(f"target modules import each other in a circle: {' -> '.join([*visiting, name])}")
        visiting.append(name)
        for dependency in target_imports(name):
            visit(dependency)
        visiting.pop()
        order.append(name)

    visit(entry)
    return tuple(order)


@cache
def bundle(entry: str) -> str:
    """One script that defines ``deployer.remote.<entry>`` and what it imports; run nothing yet.

    The caller appends what to run (see ``deployer.engine.remote`` and the release's wrapper).
    """
    parts = [_PROLOGUE.format(entry=f"{PACKAGE}.{entry}")]
    for name in load_order(entry):
        parts.append(f"\n_deployer_sources[{PACKAGE + '.' + name!r}] = {module_source(name)!r}\n")
    return "".join(parts)
