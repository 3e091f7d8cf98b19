"""The stdlib host-side verifier, run as hosts run it: ``/usr/bin/python3 weights_verify.py`` (no venv)."""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ms4fleet.hostside import weights_verify as hv
from tests.support.model_dir import REV, make_model_dir

SCRIPT = Path(hv.__file__)


def _run(*args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        ["/usr/bin/python3", "-I", str(SCRIPT), *args, "--json"], capture_output=True, text=True, check=False
    )
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def wdir(tmp_path: Path) -> Path:
    return make_model_dir(
        tmp_path / "w", {"a.bin": os.urandom(300_000), "sub/b.json": b"{}", "c.safetensors": b"x" * 10}
    )


def test_quick_check_hashes_only_what_changed_and_full_hashes_all(wdir: Path) -> None:
    code, first = _run("verify", str(wdir))
    assert code == 0 and first["ok"] and sorted(first["hashed"]) == ["a.bin", "c.safetensors", "sub/b.json"]
    assert first["stamp"] == "updated"
    code, second = _run("verify", str(wdir))
    assert code == 0 and second["hashed"] == [] and second["stamp"] == "current"

    # Same size, same mtime restored: ctime still moves, so the file is hashed and the flip found.
    path = wdir / "a.bin"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, third = _run("verify", str(wdir))
    assert code == 1 and third["hashed"] == ["a.bin"]
    assert third["bad"] == [{"path": "a.bin", "reason": "sha256 mismatch"}]

    code, full = _run("verify", str(wdir), "--full")
    assert code == 1 and len(full["hashed"]) == 3


def test_missing_resized_and_replaced_by_symlink(wdir: Path) -> None:
    (wdir / "sub/b.json").unlink()
    (wdir / "c.safetensors").write_bytes(b"x" * 11)
    (wdir / "a.bin").rename(wdir / "a.real")
    (wdir / "a.bin").symlink_to(wdir / "a.real")
    code, report = _run("verify", str(wdir))
    assert code == 1
    assert {b["path"]: b["reason"] for b in report["bad"]} == {
        "sub/b.json": "missing",
        "c.safetensors": "size 11, expected 10",
        "a.bin": "not a regular file",
    }


def test_expected_revision_and_bad_manifests(wdir: Path, tmp_path: Path) -> None:
    code, report = _run("verify", str(wdir), "--revision", "b" * 40)
    assert code == 1 and report["error"] == f"holds revision {REV}, expected {'b' * 40}"
    code, report = _run("verify", str(tmp_path / "nothing"))
    assert code == 1 and report["error"].startswith("no manifest at ")
    manifest = Path(hv.manifest_path(str(wdir)))
    data = json.loads(manifest.read_text())
    data["files"][0]["path"] = "../../etc/passwd"
    manifest.write_text(json.dumps(data))
    code, report = _run("verify", str(wdir))
    assert code == 1 and "is not a plain relative path" in report["error"]


def test_finalize_seals_and_renames_and_quick_check_needs_no_hashing(tmp_path: Path) -> None:
    dest = tmp_path / "models" / "m"
    staging = make_model_dir(Path(hv.staging_dir(str(dest))), {"a.bin": b"a" * 1000, "b.bin": b"b"})
    (staging / ".cache" / "huggingface").mkdir(parents=True)
    (staging / "stray.txt").write_text("not listed")
    code, report = _run("finalize", str(dest), "--owner", "nobody")
    assert code == 0 and report["action"] == "finalized"
    assert not staging.exists() and sorted(p.name for p in dest.iterdir()) == [".ms4fleet", "a.bin", "b.bin"]
    st = (dest / "a.bin").stat()
    assert oct(st.st_mode & 0o777) == "0o444" and st.st_uid == 65534 and dest.stat().st_uid == 65534
    assert oct(dest.stat().st_mode & 0o777) == "0o555"
    code, report = _run("verify", str(dest))
    assert code == 0 and report["hashed"] == []


def test_finalize_refuses_unverified_staging_and_keeps_old_dest(tmp_path: Path) -> None:
    dest = make_model_dir(tmp_path / "m", {"a.bin": b"old"})
    staging = make_model_dir(Path(hv.staging_dir(str(dest))), {"a.bin": b"new"})
    (staging / "a.bin").write_bytes(b"bad")
    code, report = _run("finalize", str(dest))
    assert code == 1 and report["bad"] == [{"path": "a.bin", "reason": "sha256 mismatch"}]
    assert (dest / "a.bin").read_bytes() == b"old"


def test_service_user_can_neither_alter_the_weights_nor_read_their_metadata() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the weights are root's and the probe runs as another user")
    # pytest's tmp dirs are 0700; the service user needs a traversable path, as under /srv.
    root = Path(tempfile.mkdtemp(prefix="ms4fleet-verify-"))
    try:
        root.chmod(0o755)
        dest = root / "w"
        make_model_dir(Path(hv.staging_dir(str(dest))), {"a.bin": b"a" * 100, "sub/b.json": b"{}"})
        assert _run("finalize", str(dest), "--owner", "root:root")[0] == 0
        meta = dest / hv.META_DIR
        modes = {p.name: (stat.S_IMODE(p.stat().st_mode), p.stat().st_uid) for p in [dest, meta, *meta.iterdir()]}
        assert modes == {
            "w": (0o555, 0),
            ".ms4fleet": (0o700, 0),
            "manifest.json": (0o600, 0),
            "stamp.json": (0o600, 0),
        }
        assert [stat.S_IMODE((dest / p).stat().st_mode) for p in ("a.bin", "sub", "sub/b.json")] == [
            0o444,
            0o555,
            0o444,
        ]
        probe = (
            "import os, sys\n"
            "for attempt in (lambda: open(sys.argv[1] + '/a.bin', 'r+b'), lambda: os.chmod(sys.argv[1] + '/a.bin', 0o644),"
            " lambda: os.rename(sys.argv[1] + '/a.bin', sys.argv[1] + '/x'), lambda: open(sys.argv[1] + '/new', 'wb'),"
            " lambda: open(sys.argv[1] + '/.ms4fleet/manifest.json', 'rb')):\n"
            "    try:\n        attempt()\n    except PermissionError:\n        print('denied')\n"
            "    else:\n        print('allowed')\n"
        )
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-I"]
        done = subprocess.run([*as_nobody, "-c", probe, str(dest)], capture_output=True, text=True, check=False)
        assert done.stdout.split() == ["denied"] * 5, done.stdout + done.stderr
        assert (dest / "a.bin").read_bytes() == b"a" * 100
    finally:
        hv.remove_tree(str(root))


def test_script_imports_only_the_standard_library() -> None:
    tree = ast.parse(SCRIPT.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert modules - {"__future__"} <= set(sys.stdlib_module_names)


def test_exec_start_pre_command_passes_then_fails_on_damage(tmp_path: Path) -> None:
    import shlex

    from ms4fleet.weights import startcheck

    installed = tmp_path / "lib" / "weights_verify.py"
    installed.parent.mkdir()
    _path, content, mode = startcheck.verifier_file()
    installed.write_bytes(content)
    installed.chmod(mode)
    wdir = make_model_dir(tmp_path / "m", {"a.bin": b"a" * 1000})
    line = startcheck.exec_start_pre(str(wdir), "o/r", REV)
    assert line.startswith("+/usr/bin/python3 /usr/local/lib/ms4fleet/weights_verify.py verify ")
    argv = shlex.split(line[1:])
    argv[1] = str(installed)
    assert subprocess.run(argv, capture_output=True, check=False).returncode == 0
    (wdir / "a.bin").write_bytes(b"b" * 1000)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "a.bin: sha256 mismatch" in done.stderr


def test_a_foreign_directory_is_never_replaced(tmp_path: Path) -> None:
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    make_model_dir(Path(hv.staging_dir(str(foreign))), {"a.bin": b"a"})
    code, report = _run("finalize", str(foreign))
    assert code == 1 and report["error"].endswith("is not an ms4fleet weights directory: refusing to replace it")
    assert (foreign / "notes.txt").read_text() == "mine"
    code, report = _run("prepare", str(foreign))
    assert code == 1 and "refusing to replace it" in report["error"]
    # An empty directory (made by provisioning, say) is fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    make_model_dir(Path(hv.staging_dir(str(empty))), {"a.bin": b"a"})
    assert _run("finalize", str(empty))[0] == 0
