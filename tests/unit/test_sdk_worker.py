"""The Python app SDK: the ELVES worker contract, in process and as a real interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from elves.apps.sdk.worker import (
    PRECOMPILED,
    call,
    decode_params,
    encode_params,
    json_value,
    load_app,
    main,
    render,
)

SAMPLES = Path(__file__).resolve().parents[2] / "apps" / "samples"


def test_apptest_helloword_returns_toryzen() -> None:
    assert call(SAMPLES / "apptest", "apptest", "helloword", encode_params({"my": "toryzen"})) == (
        "true",
        "toryzen",
    )


def test_main_prints_the_two_tags(capsys: pytest.CaptureFixture[str]) -> None:
    script = str(SAMPLES / "apptest" / "app-worker.py")
    main([script, "apptest", "helloword", encode_params({"my": "toryzen"})])
    assert capsys.readouterr().out == render("true", "toryzen")


def test_an_exception_becomes_false_with_its_traceback() -> None:
    flag, result = call(SAMPLES / "crasher", "crasher", "boom", "")
    assert flag == "false"
    assert result.startswith("Traceback (most recent call last):")
    assert "RuntimeError: boom" in result


def test_an_unknown_method_is_false_not_a_crash() -> None:
    flag, result = call(SAMPLES / "apptest", "apptest", "nosuch", "")
    assert flag == "false"
    assert "AttributeError" in result


def test_private_methods_cannot_be_called() -> None:
    assert call(SAMPLES / "apptest", "apptest", "__init__", "")[0] == "false"


def test_params_that_are_not_an_object_are_false() -> None:
    flag, result = call(SAMPLES / "apptest", "apptest", "helloword", encode_params("[1, 2]"))
    assert flag == "false"
    assert "JSON object" in result


def test_params_round_trip_and_empty_means_none() -> None:
    assert decode_params(encode_params({"a": "ü"})) == {"a": "ü"}
    assert decode_params("") == {}


@pytest.mark.parametrize(
    "text",
    ['{"a": [1, 2.5, null, true]}', '  {"a": "\\u00fc"}\n\t', "[]", '"x"', "3", " \r\n{} "],
)
def test_json_value_reads_what_json_loads_reads(text: str) -> None:
    assert json_value(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "   ", "{", '{"a": 1} x', "{} {}", "nope", "{'a': 1}"])
def test_json_value_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as refused:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as ours:
        json_value(text)
    assert (ours.value.msg, ours.value.pos) == (refused.value.msg, refused.value.pos)


@pytest.mark.parametrize("encoded", ["e30", "e30=!", "ü", "e3=0"])
def test_params_that_are_not_strict_base64_are_a_value_error(encoded: str) -> None:
    with pytest.raises(ValueError, match="not base64"):
        decode_params(encoded)


def test_app_worker_runs_under_a_fresh_interpreter() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SAMPLES / "apptest" / "app-worker.py"),
            "apptest",
            "helloword",
            encode_params({"my": "toryzen"}),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    assert done.stdout == render("true", "toryzen")


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["app-worker.py"])
    assert exc.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_load_app_runs_a_precompiled_module_and_reads_the_file_without_one(
    tmp_path: Path,
) -> None:
    (tmp_path / "pre.py").write_text("WHERE = 'file'\n")
    path = str(tmp_path / "pre.py")
    try:
        # What the agent's fork server leaves in a task process: the module already compiled.
        PRECOMPILED[path] = compile("WHERE = 'compiled'\n", path, "exec", dont_inherit=True)
        module = load_app(tmp_path, "pre")
        assert (module.WHERE, module.__file__) == ("compiled", path)
        del PRECOMPILED[path]
        assert load_app(tmp_path, "pre").WHERE == "file"
    finally:
        PRECOMPILED.pop(path, None)
        sys.modules.pop("pre", None)
        sys.path.remove(str(tmp_path))
