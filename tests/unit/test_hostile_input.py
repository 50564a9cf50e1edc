"""Issue 12, class 6, the pure parts: what the probe reads is parsed as hostile input, and
what comes back is shown safely (terminal, JUnit) and redacted line by line.

The attacks on a real target (as the job's user, with real FIFOs and a 350 MB ledger) are in
tests/cron/test_hostile_records.py; here, the parsers and sanitisers, case by case.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from deployer.cli.deploy import junit_xml
from deployer.cli.output import Output, shown
from deployer.core.health import parse_time
from deployer.remote import messages, targetlib

GOOD = {"run_id": "0123456789abcdef", "job": "hello", "start": "2026-01-01T00:00:00.000Z", "end": "2026-01-01T00:00:01.000Z",
        "duration": 1.0, "exit_code": 0, "outcome": "success", "pid": 42, "user": "www-data", "trigger": "cron"}


@pytest.mark.parametrize("line, why", [
    (b"1", "not a JSON object"),
    (b"[]", "not a JSON object"),
    (b'"success"', "not a JSON object"),
    (b"null", "not a JSON object"),
    (b'{"pid": "x"}', "field pid is a string of 1 characters"),
    (json.dumps({**GOOD, "pid": "x"}).encode(), "field pid is a string of 1 characters"),
    (json.dumps({**GOOD, "pid": True}).encode(), "field pid is a JSON boolean"),
    (json.dumps({**GOOD, "duration": "1s"}).encode(), "field duration is a string of 2 characters"),
    (json.dumps({**GOOD, "start": 5}).encode(), "field start is a JSON number"),
    (json.dumps({**GOOD, "outcome": ["success"]}).encode(), "field outcome is a JSON array"),
    (json.dumps({**GOOD, "run_id": {"a": 1}}).encode(), "field run_id is a JSON object"),
    (json.dumps({**GOOD, "outcome": "great"}).encode(), "unknown outcome"),
    (json.dumps({**GOOD, "duration": float("nan")}).encode(), "field duration is NaN"),
    (json.dumps({**GOOD, "log": "x" * 5000}).encode(), "field log is a string of 5000 characters"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "start"}).encode(), "no start"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "outcome"}).encode(), "no outcome"),
    (json.dumps(GOOD).encode()[:-5], "not JSON"),  # cut by a full disk
    (b"\xff" + json.dumps(GOOD).encode(), "not UTF-8"),
    (json.dumps({**GOOD, "host": "h"}).encode().replace(b'"h"', b'"\xc3"'), "not UTF-8"),
    (b"[" * 100000, "not JSON"),  # nesting deep enough to raise RecursionError
    (b'{"run_id": "a", "start": "s", "outcome": "success", "exit_code": 1' + b"0" * 5000 + b"}", "not JSON"),
])
def test_a_line_that_is_not_a_run_record_is_skipped_and_said(line: bytes, why: str) -> None:
    records, bad = targetlib.parse_run_lines([json.dumps(GOOD).encode(), line, json.dumps(GOOD).encode()])
    assert records == [GOOD, GOOD]
    assert bad is not None and bad[0] == 1 and bad[2] == why


def test_a_run_record_keeps_its_typed_fields_and_drops_unknown_ones() -> None:
    record, why = targetlib.run_record({**GOOD, "exit_code": None, "pid": None, "extra": {"x": 1}})
    assert why is None and record == {**GOOD, "exit_code": None, "pid": None}
    # a running marker has no outcome yet; a ledger line must have one
    marker = {"run_id": "a", "start": "2026-01-01T00:00:00.000Z", "pid": 7, "wrapper_pid": 6}
    assert targetlib.run_record(marker, ledger=False) == (marker, None)
    assert targetlib.run_record(marker)[1] == "no outcome"



def test_a_running_marker_keeps_only_what_a_running_run_has() -> None:
    # Typing the marker (messages.RunningMarker) showed it: a marker written by someone else
    # that claimed an outcome was passed on, and `logs --run` showed a running run as "success".
    marker = {"run_id": "a", "start": "2026-01-01T00:00:00.000Z", "pid": 7, "wrapper_pid": 6, "host": "h",
              "revision": "r", "trigger": "cron", "log": "runs/x.log"}
    claims = {"outcome": "success", "end": "2026-01-01T00:00:01.000Z", "duration": 1.0, "exit_code": 0, "job": "j"}
    assert targetlib.run_record({**marker, **claims}, ledger=False) == (marker, None)
    # its fields are still checked: a marker with a forged field of the wrong type is none
    assert targetlib.run_record({**marker, "outcome": 5}, ledger=False) == (None, "field outcome is a JSON number")


def test_the_fields_read_back_are_the_fields_the_wrapper_writes() -> None:
    written = messages.RunRecord.__required_keys__ | messages.RunRecord.__optional_keys__
    marked = messages.RunningMarker.__required_keys__ | messages.RunningMarker.__optional_keys__
    assert set(targetlib.RUN_FIELDS) == written | marked
    assert marked == targetlib.MARKER_FIELDS
    assert set(messages.RunFound.__required_keys__ | messages.RunFound.__optional_keys__) == written | marked | {"alive"}
    assert targetlib.OUTCOMES == ("success", "failure", "timeout", "skipped-locked", "crashed")

def test_tail_reads_only_the_end_and_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b"".join(b"line %d\n" % n for n in range(100000)) + b"partial")
    lines, problem = targetlib.tail_lines(str(path), 3)
    assert problem is None and lines == [b"line 99998", b"line 99999", b"partial"]
    # bounded: the lines that fit in the last bytes, never a cut one
    lines, _ = targetlib.tail_lines(str(path), 1000, max_bytes=41)  # "\nline 99997\n" ... "partial"
    assert lines == [b"line 99997", b"line 99998", b"line 99999", b"partial"]
    lines, _ = targetlib.tail_lines(str(path), 1000, max_bytes=40)  # no newline before "line 99997": maybe cut
    assert lines == [b"line 99998", b"line 99999", b"partial"]
    assert targetlib.tail_lines(str(tmp_path / "missing"), 5) == ([], None)
    assert targetlib.tail_lines(str(path), 0) == ([], None)


def test_a_fifo_a_link_or_a_folder_is_never_read_nor_waited_on(tmp_path: Path) -> None:
    fifo, link, folder = tmp_path / "fifo", tmp_path / "link", tmp_path / "folder"
    os.mkfifo(fifo)  # a writer-less FIFO: a plain open() would block here forever
    (tmp_path / "target").write_text('{"a": 1}\n')
    link.symlink_to(tmp_path / "target")
    folder.mkdir()
    for reader in (lambda p: targetlib.tail_lines(p, 5), targetlib.read_json_file):
        assert reader(str(fifo))[1] == f"{fifo}: is a FIFO, not a regular file: not read"
        assert reader(str(link))[1] == f"{link} is a symlink: not followed, not read"
        assert reader(str(folder))[1] == f"{folder}: is a folder, not a regular file: not read"
    assert targetlib.pid_in_file(str(fifo)) is None
    with pytest.raises(OSError):
        targetlib.sha256_file(str(fifo))


def test_json_files_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "marker.json"
    path.write_text(json.dumps({"a": "x" * 100}))
    assert targetlib.read_json_file(str(path), limit=50) == (None, f"{path} is larger than 50 bytes: not read")
    assert targetlib.read_json_file(str(path))[0] == {"a": "x" * 100}
    path.write_bytes(b"\xff{}")
    assert targetlib.read_json_file(str(path)) == (None, f"{path} is not JSON: not read")


def test_a_big_file_is_not_hashed(tmp_path: Path) -> None:
    path = tmp_path / "env"
    with open(path, "wb") as f:
        f.truncate(5 << 30)  # sparse: 5 GB that take no room
    assert targetlib.sha256_file(str(path), limit=64 << 20) == "larger-than-67108864-bytes"


@pytest.mark.parametrize("text", ["2026-01-01T00:00:00", "2026-01-01", "2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00+01:00"])
def test_times_without_a_zone_are_utc_never_naive(text: str) -> None:
    when = parse_time(text)
    assert when is not None and when.utcoffset() is not None


@pytest.mark.parametrize("raw, expected", [
    ("plain text", "plain text"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # CSI
    ("\x1b]0;owned\x07title", "\\x1b]0;owned\\x07title"),  # OSC: sets the window title
    ("\x9b31m", "\\x9b31m"),  # the 8-bit CSI
    ("a\rb", "a\\rb"),  # CR rewrites the line on a terminal
    ("a\nb", "a\\nb"),  # a line of ours faked
    ("tab\tkept", "tab\tkept"),
    ("right\u202eto-left", "right\\u202eto-left"),  # bidi override
    ("\x00\x08\x7f", "\\x00\\x08\\x7f"),
    ("\udcff", "\\udcff"),  # undecodable bytes kept by surrogateescape
])
def test_control_characters_are_shown_escaped(raw: str, expected: str) -> None:
    assert shown(raw) == expected


def test_newlines_stay_where_asked() -> None:
    assert shown("one\ntwo\x1b", newlines=True) == "one\ntwo\\x1b"


PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "q2VYk3jIbJkq8sW0Z1\nabc\n-----END PRIVATE KEY-----")


def test_every_line_of_a_multi_line_secret_is_redacted() -> None:
    out = Output()
    out.secrets.add(PEM)
    for line in PEM.split("\n")[:-2]:
        assert out.redact(f"host | {line}") == "host | ********"
    assert out.redact("abc") == "abc"  # too short a line to redact alone (3 characters of a key)
    assert out.redact(f"whole: {PEM}!") == "whole: ********!"
    assert out.redact("nothing here") == "nothing here"


def test_json_output_redacts_before_escaping(capsys: pytest.CaptureFixture[str]) -> None:
    out = Output(json_mode=True)
    secret = 'pa"ss\\wörd'  # JSON escapes the quote, the backslash and the ö
    out.secrets.update({secret, PEM})
    out.emit_json({"lines": [f"token {secret}", PEM.split("\n")[1]], secret: 1})
    text = capsys.readouterr().out
    assert "wö" not in text and "w\\u00f6rd" not in text and "MIIEvQ" not in text
    assert json.loads(text) == {"lines": ["token ********", "********"], "********": 1}


class _Check:
    def __init__(self, name: str, status: str, detail: str, job: str | None = None) -> None:
        self.name, self.status, self.detail, self.job = name, status, detail, job


class _State:
    def __init__(self, checks: list[_Check]) -> None:
        self.name, self.checks, self.seconds, self.error = "web1", checks, 0.5, None


class _Session:
    class project:  # noqa: N801 - stands in for the Project's attribute
        name = "demo"

    class env:  # noqa: N801
        name = "dev"

    def __init__(self, states: list[_State]) -> None:
        self.states = states


def test_junit_stays_valid_xml_with_control_characters() -> None:
    out = Output()
    out.secrets.add("hunter2")
    detail = "log says \x1b[2J\x00\x0b\x0c\x1c\ufffe bye hunter2"
    session = _Session([_State([_Check("records", "warn", detail, "hello"), _Check("success", "fail", detail, "hello")])])
    xml = junit_xml(session, lambda text: out.safe(text, newlines=True))  # type: ignore[arg-type]
    root = ET.fromstring(xml.split("?>", 1)[1])  # parses: no character XML 1.0 forbids
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.get("message") == "log says \\x1b[2J\\x00\\x0b\\x0c\\x1c\\ufffe bye ********"
    # without cleaning, the same checks are not XML at all: what CI would have choked on
    with pytest.raises(ET.ParseError):
        ET.fromstring(junit_xml(session).split("?>", 1)[1])  # type: ignore[arg-type]


def test_a_ledger_lines_alert_deliveries_are_checked_item_by_item() -> None:
    line = {"run_id": "r", "start": "2026-01-01T00:00:00.000Z", "outcome": "failure"}
    good = {"channel": "oncall", "event": "failure", "ok": False, "error": "Connection refused", "attempts": 3, "seconds": 1.5}
    assert targetlib.run_record({**line, "alerts": [good], "alert_errors": ["x"]}) == (
        {**line, "alerts": [good], "alert_errors": ["x"]}, None)
    assert targetlib.run_record({**line, "alerts": [{**good, "ok": "yes"}]}) == (None, "field alerts: ok is a string of 3 characters")
    assert targetlib.run_record({**line, "alerts": [{**good, "url": "http://x"}]}) == (
        None, "field alerts holds something other than a delivery")
    assert targetlib.run_record({**line, "alert_errors": [1]}) == (None, "field alert_errors holds a JSON number")
    assert targetlib.run_record({**line, "alerts": [good] * 65}) == (None, "field alerts has more than 64 items")
