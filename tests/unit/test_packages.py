"""Package checks: a safe zip with a manifest that agrees with its app and version."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import pytest

from elves.errors import BadPackage, PackageTooLarge
from elves.packages import inspect, name_of, zip_dir

WORKER = "from elves.apps.sdk.worker import main\n\nmain()\n"


def make_zip(files: dict[str, str | bytes], link: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def good(manifest: dict[str, object] | None = None, **extra: str) -> bytes:
    meta = {"entry": "app-worker.py", "description": "d"} if manifest is None else manifest
    return make_zip({"manifest.json": json.dumps(meta), "app-worker.py": WORKER, **extra})


def test_a_good_package_gives_its_manifest() -> None:
    manifest = inspect(good(), "demo", "1.0", 1 << 20)
    assert (manifest.entry, manifest.proxy, manifest.description) == ("app-worker.py", None, "d")


def test_app_and_version_in_the_manifest_must_agree() -> None:
    data = good({"entry": "app-worker.py", "app": "demo", "version": "2"})
    assert inspect(data, "demo", "2", 1 << 20).entry == "app-worker.py"
    with pytest.raises(BadPackage, match="version"):
        inspect(data, "demo", "3", 1 << 20)
    with pytest.raises(BadPackage, match="app"):
        inspect(data, "other", "2", 1 << 20)


@pytest.mark.parametrize("name", ["../evil.py", "/etc/cron.d/x", "a/../../x", "C:/x", "a\\..\\x"])
def test_zip_slip_entries_are_refused(name: str) -> None:
    with pytest.raises(BadPackage, match="unsafe path") as err:
        inspect(good(**{name: "x"}), "demo", "1", 1 << 20)
    assert err.value.code == "413.2"


def test_a_link_is_refused() -> None:
    data = make_zip({"manifest.json": '{"entry": "app-worker.py"}', "app-worker.py": ""}, "l")
    with pytest.raises(BadPackage, match="link"):
        inspect(data, "demo", "1", 1 << 20)


def test_a_missing_manifest_is_refused() -> None:
    with pytest.raises(BadPackage, match="no manifest.json"):
        inspect(make_zip({"app-worker.py": WORKER}), "demo", "1", 1 << 20)


@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        ("{}", "needs an `entry`"),
        ('{"entry": "missing.py"}', "not a file"),
        ('{"entry": "app-worker.py", "proxy": 3}', "proxy"),
    ],
)
def test_a_bad_manifest_is_refused(manifest: str, why: str) -> None:
    data = make_zip({"manifest.json": manifest, "app-worker.py": WORKER})
    with pytest.raises(BadPackage, match=why):
        inspect(data, "demo", "1", 1 << 20)


def test_not_a_zip_is_refused() -> None:
    with pytest.raises(BadPackage, match="not a zip"):
        inspect(b"hello, not a zip", "demo", "1", 1 << 20)


def test_a_corrupt_member_is_refused() -> None:
    data = bytearray(good(**{"big.txt": "A" * 200}))
    at = data.find(b"A" * 50)
    data[at] = ord("B")
    with pytest.raises(BadPackage, match="corrupt"):
        inspect(bytes(data), "demo", "1", 1 << 20)


def test_size_limits() -> None:
    data = good()
    with pytest.raises(PackageTooLarge) as err:
        inspect(data, "demo", "1", len(data) - 1)
    assert (err.value.code, err.value.status) == ("413.2", 413)
    compressed = io.BytesIO()
    with zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", '{"entry": "a"}')
        zf.writestr("a", "0" * 100_000)
    with pytest.raises(BadPackage, match="unpacks to over"):
        inspect(compressed.getvalue(), "demo", "1", len(compressed.getvalue()))


@pytest.mark.parametrize(("app", "version"), [("1bad", "1"), ("demo", "../1"), ("demo", "")])
def test_bad_names_are_refused(app: str, version: str) -> None:
    with pytest.raises(BadPackage, match="bad"):
        inspect(good(), app, version, 1 << 20)


def test_package_names() -> None:
    assert name_of("demo_1.2.zip") == ("demo", "1.2")
    assert name_of("/x/y/my_app_1.0.zip") == ("my_app", "1.0")
    assert name_of("demo.zip") is None


def test_a_folder_zips_to_its_files_at_the_root(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"entry": "app-worker.py"}')
    (tmp_path / "app-worker.py").write_text(WORKER)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"x")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "util.py").write_text("")
    with zipfile.ZipFile(io.BytesIO(zip_dir(tmp_path))) as zf:
        assert sorted(zf.namelist()) == ["app-worker.py", "lib/util.py", "manifest.json"]
    assert inspect(zip_dir(tmp_path), "demo", "1", 1 << 20).entry == "app-worker.py"
