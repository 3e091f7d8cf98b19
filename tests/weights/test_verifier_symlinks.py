"""The root verifier never follows a link planted in a weights directory: every planted link or special file
is refused (not verified) and nothing outside the directory is read, written or re-moded.

The victim stands for a root 0600 file elsewhere on the host (/etc/shadow); each case is run in-process,
so that the verifier's temporary names are predictable, as they are to an attacker who knows its pid."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ms4fleet.hostside import weights_verify as hv
from tests.support.model_dir import REV, make_model_dir

SECRET = b"root:$y$secret-hash:19000:0:99999:7:::\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "shadow"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def _untouched(victim: Path) -> None:
    assert victim.read_bytes() == SECRET
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


def _meta(directory: Path) -> Path:
    return directory / hv.META_DIR


def _damage_stat(directory: Path) -> None:
    # A chmod moves ctime: the next quick check re-hashes the file and rewrites the stamp.
    os.chmod(directory / "a.bin", 0o600)
    os.chmod(directory / "a.bin", 0o444)


def plant_stamp_tmp(directory: Path, victim: Path) -> None:
    hv.verify(str(directory))
    _damage_stat(directory)
    (_meta(directory) / f"{hv.STAMP_NAME}.{os.getpid()}.tmp").symlink_to(victim)


def plant_stamp(directory: Path, victim: Path) -> None:
    (_meta(directory) / hv.STAMP_NAME).symlink_to(victim)


def plant_manifest(directory: Path, victim: Path) -> None:
    # A valid manifest, but kept outside, where whoever planted the link may change it.
    real = _meta(directory) / hv.MANIFEST_NAME
    outside = victim.parent / "manifest.json"
    os.rename(real, outside)
    real.symlink_to(outside)


def plant_meta_dir(directory: Path, victim: Path) -> None:
    os.rename(_meta(directory), victim.parent / "meta")
    _meta(directory).symlink_to(victim.parent / "meta")


def plant_subdir(directory: Path, victim: Path) -> None:
    # sub/b.json read through a linked directory: the bytes match, the place does not.
    (victim.parent / "b.json").write_bytes((directory / "sub" / "b.json").read_bytes())
    (directory / "sub" / "b.json").unlink()
    (directory / "sub").rmdir()
    (directory / "sub").symlink_to(victim.parent)


def plant_fifo(directory: Path, victim: Path) -> None:
    (directory / "sub" / "b.json").unlink()
    os.mkfifo(directory / "sub" / "b.json")


def plant_file(directory: Path, victim: Path) -> None:
    (directory / "a.bin").unlink()
    (directory / "a.bin").symlink_to(victim)


PLANTS: dict[str, Callable[[Path, Path], None]] = {
    "stamp temp file": plant_stamp_tmp,
    "stamp": plant_stamp,
    "manifest": plant_manifest,
    "metadata dir": plant_meta_dir,
    "model subdir": plant_subdir,
    "fifo": plant_fifo,
    "model file": plant_file,
}


@pytest.mark.parametrize("plant", PLANTS.values(), ids=PLANTS.keys())
def test_verify_refuses_a_planted_link_and_changes_nothing(
    tmp_path: Path, victim: Path, plant: Callable[[Path, Path], None]
) -> None:
    wdir = make_model_dir(tmp_path / "w", {"a.bin": os.urandom(1000), "sub/b.json": b"{}"})
    os.chmod(wdir / "a.bin", 0o444)
    plant(wdir, victim)
    before = sorted((p.name, p.lstat().st_mode, p.lstat().st_mtime_ns) for p in victim.parent.iterdir())
    report = hv.verify(str(wdir))
    # A link at the stamp's temporary name spoils nothing the check reads: the stamp is written elsewhere.
    assert report["ok"] == (plant is plant_stamp_tmp), report
    _untouched(victim)
    assert sorted((p.name, p.lstat().st_mode, p.lstat().st_mtime_ns) for p in victim.parent.iterdir()) == before


def test_finalize_refuses_a_planted_link_and_changes_nothing(tmp_path: Path, victim: Path) -> None:
    dest = tmp_path / "models" / "m"
    staging = make_model_dir(Path(hv.staging_dir(str(dest))), {"a.bin": b"a" * 100, "sub/b.json": b"{}"})
    plant_subdir(staging, victim)
    report = hv.finalize(str(dest))
    assert not report["ok"] and not dest.exists()
    _untouched(victim)
    assert stat.S_IMODE((victim.parent / "b.json").stat().st_mode) == 0o644


def test_prepare_removes_the_link_not_what_it_points_to(tmp_path: Path, victim: Path) -> None:
    wdir = make_model_dir(tmp_path / "w", {"a.bin": b"a" * 100, "sub/b.json": b"{}"})
    plant_subdir(wdir, victim)
    report = hv.prepare(str(wdir), repo="o/r", revision=REV)
    assert report["action"] == "repair", report
    staging = Path(hv.staging_dir(str(wdir)))
    assert not os.path.lexists(staging / "sub") or not (staging / "sub").is_symlink()
    _untouched(victim)
    assert (victim.parent / "b.json").read_bytes() == b"{}"
