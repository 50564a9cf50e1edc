"""Hostile declarations end fast, in a located error, never in a hang, a traceback or gigabytes
(issue 12, class 7). The messages themselves are in the bad-input corpus (tests/bad_inputs/160-182);
here: the time and memory each attack is allowed, and that ordinary declarations still work."""

from __future__ import annotations

import resource
import time

import pytest

from deployer.config.sandbox import MAX_SIZE, BoundedEnvironment, TemplateLimit
from deployer.config.yamlsource import MAX_DEPTH, MAX_VALUES, load_yaml
from deployer.errors import InvalidInput


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_billion_laughs_is_refused_at_once_without_memory() -> None:
    text = billion_laughs()
    assert len(text) < 600  # 9**9 = 387 million values, from these few hundred bytes
    before = _max_rss_mib()
    started = time.monotonic()
    with pytest.raises(InvalidInput) as caught:
        load_yaml(text, "deployer.yml")
    assert time.monotonic() - started < 2
    assert _max_rss_mib() - before < 100
    [problem] = caught.value.problems
    assert problem.file == "deployer.yml" and problem.line is not None
    assert f"more than {MAX_VALUES} values" in problem.message


@pytest.mark.parametrize("text", ["x: " + "[" * 100_000 + "]" * 100_000, "x:\n" + "".join("  " * i + "- \n" for i in range(200)),
                                  "x: " + "{a: " * 5000 + "1" + "}" * 5000])
def test_deep_nesting_is_a_located_error_not_a_recursion_error(text: str) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidInput) as caught:
        load_yaml(text, "deployer.yml")
    assert time.monotonic() - started < 5
    [problem] = caught.value.problems
    assert f"nested more than {MAX_DEPTH} levels" in problem.message and problem.line in (1, MAX_DEPTH + 1)


def test_an_alias_inside_itself_is_a_located_error() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_yaml("x: &loop [*loop]\n", "deployer.yml")
    assert "an alias used inside the value it names" in caught.value.problems[0].message


def test_ordinary_aliases_and_merge_keys_still_load() -> None:
    data, _ = load_yaml("base: &base {timeout: 5m, run_as: www-data}\njob: {<<: *base, schedule: '@daily'}\n"
                        "hosts: &h [a, b]\nagain: *h\n", "deployer.yml")
    assert data["job"] == {"timeout": "5m", "run_as": "www-data", "schedule": "@daily"}
    assert data["again"] == ["a", "b"]


ATTACKS = [
    "{{ 9 ** (9 ** 9) }}",  # hours of big-integer arithmetic
    "{{ 'x' * 10 ** 10 }}",  # 10 GB
    "{{ [0] * 10 ** 10 }}",
    "{{ 'x'.center(10 ** 10) }}",
    "{{ 'x'.ljust(10 ** 10) }}",
    "{{ '{:999999999}'.format(1) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ ('x' * 90000) | replace('x', 'xx') }}",
    "{{ ('x' * 90000).replace('x', 'xx') }}",
    "{{ 'x' | indent(10 ** 9) }}",
    "{{ range(10 ** 9) | list }}",
    "{{ lipsum(10 ** 9) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",  # 10^10 iterations
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",  # RecursionError
    "{% set a = 'x' * 90000 %}{{ a }}",
    "{{" + "(" * 50_000 + "1" + ")" * 50_000 + "}}",  # RecursionError in the parser
    "{{ x }}" * 20,  # 20 x 90000 characters of output
    "{% include 'x' %}",
]


@pytest.mark.parametrize("template", ATTACKS, ids=range(len(ATTACKS)))
def test_a_template_cannot_compute_forever_or_fill_memory(template: str) -> None:
    before = _max_rss_mib()
    started = time.monotonic()
    with pytest.raises(TemplateLimit):
        BoundedEnvironment().render(template, {"x": "y" * 90_000})
    assert time.monotonic() - started < 2
    assert _max_rss_mib() - before < 100


def test_what_paths_and_arguments_need_still_renders() -> None:
    env = BoundedEnvironment()
    context = {"shop_root": "/var/lib/shop-prod", "env": "prod", "port": 8080, "vars": {"tier": "web"},
               "names": ["a", "b"]}
    assert env.render("{{ shop_root }}/data/{{ env | upper }}.sqlite", context) == "/var/lib/shop-prod/data/PROD.sqlite"
    assert env.render("--port={{ port + 1 }}", context) == "--port=8081"
    assert env.render("{% if env == 'prod' %}--live{% else %}--dry{% endif %}", context) == "--live"
    assert env.render("{{ vars.tier | default('x') }}-{{ names | join(',') }}", context) == "web-a,b"
    assert env.render("{{ missing | default('/tmp') }}", context) == "/tmp"
    assert env.render("{{ 'a' * 3 }}{{ 2 ** 10 }}", context) == "aaa1024"
    assert len(env.render("{{ 'x' * " + str(MAX_SIZE) + " }}", context)) == MAX_SIZE
