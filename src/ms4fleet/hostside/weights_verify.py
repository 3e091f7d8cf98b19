#!/usr/bin/env python3
"""Verify, prepare and finalize an ms4fleet weights directory. Standard library only: shipped to hosts.

A weights directory holds the model files and ``.ms4fleet/manifest.json`` (every file's relative path, size
and sha256, plus repo, revision and profile). ``.ms4fleet/stamp.json`` caches, per file, the stat tuple
(size, mtime_ns, ctime_ns, inode) it had when its sha256 last matched: the quick check hashes only
files whose stat changed since (any write, truncate, replace or chmod changes ctime), the full check hashes
everything (schedule it to catch silent media errors, which change no stat field).

Commands (exit 0: verified / done; 1: not verified; 2: usage, permission or I/O problem):

    weights_verify.py verify DIR [--full] [--repo R] [--revision REV] [--json]
    weights_verify.py prepare DIR [--repo R] [--revision REV] [--json]
    weights_verify.py finalize DIR [--owner USER[:GROUP]] [--repo R] [--revision REV] [--json]

``prepare`` readies ``DIR.partial`` for a transfer: nothing to do when DIR verifies; otherwise DIR's files are
reused when DIR holds the same repo and revision (only bad files are removed), else an empty staging dir.
``finalize`` verifies ``DIR.partial`` (hashing every file not proven by the stamp), drops downloader
leftovers, sets owner and read-only modes, writes the stamp and renames it over DIR. DIR therefore never
holds an unverified set of files.

Run as root on a directory others may have written to, it never follows a link inside DIR: every path below
DIR is opened one component at a time relative to its parent's descriptor with O_NOFOLLOW, anything that
is not a regular file (or directory) is refused unopened, and new files are created with O_EXCL. The
metadata is root's alone (directory 0700, files 0600); the model files and directories are read-only.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypedDict, TypeVar

META_DIR = ".ms4fleet"
MANIFEST_NAME = "manifest.json"
STAMP_NAME = "stamp.json"
MANIFEST_FORMAT = 1
STAGING_SUFFIX = ".partial"
# Directories other tools leave in a download dir that never belong in a finalized one.
LEFTOVER_DIRS = (".cache",)
# Resumable transfers keep their unfinished bytes here (inside META_DIR, so never mistaken for a model file).
PARTIAL_DIR = "partial"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASH_BUFFER = 8 * 1024 * 1024
FILE_MODE, DIR_MODE = 0o444, 0o555
META_FILE_MODE, META_DIR_MODE = 0o600, 0o700
# The metadata's owner whatever the files' owner: a service user able to re-stamp could hide a change.
ROOT_IDS: Optional[Tuple[int, int]] = (0, 0) if os.geteuid() == 0 else None
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# O_NONBLOCK: a FIFO swapped in between the stat and the open must not block the open.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC

# size, mtime_ns, ctime_ns, inode. Not the device number: NVMe names (and so st_dev) can swap across reboots,
# which would force a needless full re-hash.
StatKey = Tuple[int, int, int, int]


class ManifestError(Exception):
    """The manifest is missing, unreadable or malformed."""


class NotRegular(OSError):
    """A path below the weights directory is a link, a special file, or lies under one."""


def open_dir(directory: str) -> int:
    """A descriptor of ``directory`` itself, refusing a link in its place (the path above it is root's)."""
    try:
        return os.open(directory, _DIR_FLAGS)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotRegular(err.errno, "not a directory (or a link to one)", directory) from None
        raise


def _parent_fd(root_fd: int, rel: str) -> Tuple[int, str]:
    """A new descriptor of the directory holding ``rel`` (below ``root_fd``) and the final name."""
    parts = rel.split("/")
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotRegular(err.errno, "a path component is not a directory", rel) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1]


def lstat_at(root_fd: int, rel: str) -> os.stat_result:
    fd, name = _parent_fd(root_fd, rel)
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def open_regular(root_fd: int, rel: str) -> int:
    """A read descriptor of the regular file ``rel``; ``NotRegular`` for anything else, left unopened."""
    fd, name = _parent_fd(root_fd, rel)
    try:
        before = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(before.st_mode):
            raise NotRegular(errno.EINVAL, "not a regular file", rel)
        handle = os.open(name, _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)
    st = os.fstat(handle)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
        os.close(handle)
        raise NotRegular(errno.EINVAL, "not a regular file", rel)
    return handle


def _read_regular(directory: str, rel: str) -> bytes:
    root_fd = open_dir(directory)
    try:
        handle = open_regular(root_fd, rel)
    finally:
        os.close(root_fd)
    with os.fdopen(handle, "rb") as stream:
        return stream.read()


class BadFile(TypedDict):
    path: str
    reason: str


class Report(TypedDict):
    ok: bool
    dir: str
    repo: str
    revision: str
    profile: str
    files: int
    bytes: int
    hashed: List[str]
    hashed_bytes: int
    bad: List[BadFile]
    stamp: str
    action: str
    error: str


T = TypeVar("T")
R = TypeVar("R")


def _new_report(directory: str) -> Report:
    return Report(
        ok=False,
        dir=directory,
        repo="",
        revision="",
        profile="",
        files=0,
        bytes=0,
        hashed=[],
        hashed_bytes=0,
        bad=[],
        stamp="none",
        action="",
        error="",
    )


def staging_dir(directory: str) -> str:
    return directory.rstrip("/") + STAGING_SUFFIX


def manifest_path(directory: str) -> str:
    return os.path.join(directory, META_DIR, MANIFEST_NAME)


def stamp_path(directory: str) -> str:
    return os.path.join(directory, META_DIR, STAMP_NAME)


def check_relpath(path: str) -> None:
    """Refuse manifest paths that could escape the directory or shadow its metadata."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise ManifestError("manifest path %r is not a plain relative path" % path)
    if parts[0] == META_DIR or parts[0] in LEFTOVER_DIRS:
        raise ManifestError("manifest path %r lies in a reserved directory" % path)


def load_manifest(directory: str) -> Tuple[Dict[str, Any], str]:
    """Return the parsed manifest and the sha256 of its bytes (the stamp is bound to it)."""
    path = manifest_path(directory)
    try:
        raw = _read_regular(directory, META_DIR + "/" + MANIFEST_NAME)
    except FileNotFoundError:
        raise ManifestError("no manifest at %s" % path) from None
    except NotRegular:
        raise ManifestError("%s is not a regular file (or lies under a link): refusing it" % path) from None
    except OSError as err:
        raise ManifestError("cannot read %s: %s" % (path, err.strerror)) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as err:
        raise ManifestError("%s is not valid JSON: %s" % (path, err)) from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ManifestError("%s is not an ms4fleet manifest of format %d" % (path, MANIFEST_FORMAT))
    files = data.get("files")
    if not isinstance(files, list) or not files:
        raise ManifestError("%s lists no files" % path)
    seen = set()
    for entry in files:
        if not isinstance(entry, dict):
            raise ManifestError("%s: every file entry must be an object" % path)
        rel, size, digest = entry.get("path"), entry.get("size"), entry.get("sha256")
        if not isinstance(rel, str):
            raise ManifestError("%s: a file entry has no path" % path)
        check_relpath(rel)
        if rel in seen:
            raise ManifestError("%s: %s is listed twice" % (path, rel))
        seen.add(rel)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError("%s: %s has no valid size" % (path, rel))
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ManifestError("%s: %s has no valid sha256" % (path, rel))
    return data, hashlib.sha256(raw).hexdigest()


def sha256_file(path: str) -> str:
    with open(path, "rb", buffering=0) as handle:
        return sha256_fd(handle.fileno())


def sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_BUFFER)
    view = memoryview(buffer)
    with os.fdopen(os.dup(fd), "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest()


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _load_stamp(directory: str, manifest_digest: str) -> Dict[str, StatKey]:
    try:
        data = json.loads(_read_regular(directory, META_DIR + "/" + STAMP_NAME).decode("utf-8"))
    except NotRegular:
        raise ManifestError(
            "%s is not a regular file (or lies under a link): refusing it" % stamp_path(directory)
        ) from None
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("manifest_sha256") != manifest_digest:
        return {}
    files = data.get("files")
    if not isinstance(files, dict):
        return {}
    return {k: tuple(v) for k, v in files.items() if isinstance(v, list) and len(v) == 4}


def _write_stamp(directory: str, manifest_digest: str, keys: Dict[str, StatKey]) -> None:
    body = {"manifest_sha256": manifest_digest, "files": {k: list(v) for k, v in sorted(keys.items())}}
    data = (json.dumps(body, indent=1) + "\n").encode("utf-8")
    root_fd = open_dir(directory)
    try:
        meta_fd = os.open(META_DIR, _DIR_FLAGS, dir_fd=root_fd)
    finally:
        os.close(root_fd)
    try:
        # A fresh name each time, created exclusively: nothing planted at a predictable name is followed.
        tmp = "%s.%d.%s.tmp" % (STAMP_NAME, os.getpid(), os.urandom(8).hex())
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
        handle = os.open(tmp, flags, META_FILE_MODE, dir_fd=meta_fd)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            os.fchmod(stream.fileno(), META_FILE_MODE)
        os.replace(tmp, STAMP_NAME, src_dir_fd=meta_fd, dst_dir_fd=meta_fd)
    finally:
        os.close(meta_fd)


def mark_verified(directory: str, paths: List[str]) -> None:
    """Record that ``paths`` (just hashed against the manifest by the caller) match, as they stat now."""
    _manifest, manifest_digest = load_manifest(directory)
    keys = _load_stamp(directory, manifest_digest)
    root_fd = open_dir(directory)
    try:
        for rel in paths:
            keys[rel] = stat_key(lstat_at(root_fd, rel))
    finally:
        os.close(root_fd)
    _write_stamp(directory, manifest_digest, keys)


def _default_workers() -> int:
    # Hashing is disk-bound past a few streams; hashlib releases the GIL, so threads run in parallel.
    return max(1, min(4, os.cpu_count() or 1))


def _hash_all(hash_one: Callable[[T], R], items: List[T], workers: int) -> Iterator[R]:
    """``hash_one`` over ``items`` on ``workers`` threads, in order. The import waits until there is work:
    the no-op check of a converged host hashes nothing, and concurrent.futures (it pulls in logging) would be
    most of this script's start-up there."""
    if not items:
        return iter(())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return iter(list(pool.map(hash_one, items)))


def verify(
    directory: str,
    full: bool = False,
    repo: Optional[str] = None,
    revision: Optional[str] = None,
    update_stamp: bool = True,
    workers: Optional[int] = None,
) -> Report:
    """Check every manifest file: present, regular, right size and (when its stat changed, or ``full``) sha256."""
    report = _new_report(directory)
    try:
        manifest, manifest_digest = load_manifest(directory)
    except ManifestError as err:
        report["error"] = str(err)
        return report
    report["repo"] = str(manifest.get("repo", ""))
    report["revision"] = str(manifest.get("revision", ""))
    report["profile"] = str(manifest.get("profile", ""))
    if repo is not None and report["repo"] != repo:
        report["error"] = "holds repo %s, expected %s" % (report["repo"] or "?", repo)
        return report
    if revision is not None and report["revision"] != revision:
        report["error"] = "holds revision %s, expected %s" % (report["revision"] or "?", revision)
        return report

    try:
        stamp = {} if full else _load_stamp(directory, manifest_digest)
        root_fd = open_dir(directory)
    except (ManifestError, OSError) as err:
        report["error"] = str(err)
        return report
    try:
        good, to_hash = _check_files(root_fd, manifest, stamp, report)

        def _hash(item: Tuple[str, str, StatKey]) -> Tuple[str, str, StatKey, str]:
            rel, expected, key = item
            try:
                handle = open_regular(root_fd, rel)
            except NotRegular:
                return rel, expected, key, "not a regular file"
            except OSError as err:
                return rel, expected, key, "unreadable: %s" % err.strerror
            try:
                if stat_key(os.fstat(handle)) != key:
                    return rel, expected, key, "changed while being checked"
                return rel, expected, key, sha256_fd(handle)
            except OSError as err:
                return rel, expected, key, "unreadable: %s" % err.strerror
            finally:
                os.close(handle)

        for rel, expected, key, actual in _hash_all(_hash, to_hash, workers or _default_workers()):
            report["hashed"].append(rel)
            report["hashed_bytes"] += key[0]
            if actual == expected:
                good[rel] = key
            elif _SHA256.match(actual):
                report["bad"].append(BadFile(path=rel, reason="sha256 mismatch"))
            else:
                report["bad"].append(BadFile(path=rel, reason=actual))
    finally:
        os.close(root_fd)

    report["ok"] = not report["bad"]
    report["stamp"] = "current"
    if to_hash and update_stamp:
        try:
            _write_stamp(directory, manifest_digest, good)
            report["stamp"] = "updated"
        except OSError:
            # A reader without write access (the service user before a restart) still gets a correct answer.
            report["stamp"] = "unwritable"
    return report


def _check_files(
    root_fd: int, manifest: Dict[str, Any], stamp: Dict[str, StatKey], report: Report
) -> Tuple[Dict[str, StatKey], List[Tuple[str, str, StatKey]]]:
    """Stat every listed file (never through a link): the ones the stamp proves, and the ones to hash."""
    good: Dict[str, StatKey] = {}
    to_hash: List[Tuple[str, str, StatKey]] = []
    for entry in manifest["files"]:
        rel, size = entry["path"], entry["size"]
        report["files"] += 1
        report["bytes"] += size
        try:
            st = lstat_at(root_fd, rel)
        except FileNotFoundError:
            report["bad"].append(BadFile(path=rel, reason="missing"))
            continue
        except NotRegular:
            report["bad"].append(BadFile(path=rel, reason="not a regular file"))
            continue
        if not stat.S_ISREG(st.st_mode):
            report["bad"].append(BadFile(path=rel, reason="not a regular file"))
            continue
        if st.st_size != size:
            report["bad"].append(BadFile(path=rel, reason="size %d, expected %d" % (st.st_size, size)))
            continue
        key = stat_key(st)
        if stamp.get(rel) == key:
            good[rel] = key
        else:
            to_hash.append((rel, entry["sha256"], key))
    return good, to_hash


def make_writable_dirs(root: str) -> None:
    """Give the owner write access to every directory of the tree (fwalk: descriptors, never a link)."""
    for _current, _dirs, _files, fd in os.fwalk(root, follow_symlinks=False):
        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | stat.S_IWUSR | stat.S_IXUSR)


def remove_tree(path: str) -> None:
    """Remove a (possibly read-only) tree; a link in its place is removed, not followed."""
    if os.path.islink(path):
        os.unlink(path)
    elif os.path.lexists(path):
        make_writable_dirs(path)
        shutil.rmtree(path)


def remove_entry(path: str) -> None:
    """Remove whatever is at ``path`` (file, link or directory), if anything."""
    if os.path.isdir(path) and not os.path.islink(path):
        remove_tree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def remove_below(root: str, rel: str) -> None:
    """Remove ``rel`` below ``root``, or the first link or non-directory on its way there (so a link
    planted in the place of a directory goes, and nothing it points to)."""
    parts = rel.split("/")
    for depth in range(1, len(parts) + 1):
        path = os.path.join(root, *parts[:depth])
        if depth == len(parts) or os.path.islink(path) or not os.path.isdir(path):
            remove_entry(path)
            return


def replaceable(directory: str) -> bool:
    """Whether ``directory`` may be replaced: absent, empty, or an ms4fleet weights directory (never a
    directory of someone else's files that a mistyped path happens to name)."""
    if not os.path.lexists(directory):
        return True
    if os.path.islink(directory) or not os.path.isdir(directory):
        return False
    return os.path.exists(manifest_path(directory)) or not os.listdir(directory)


def _not_replaceable(report: Report, directory: str) -> Report:
    report["error"] = "%s exists and is not an ms4fleet weights directory: refusing to replace it" % directory
    report["action"] = ""
    return report


def prepare(directory: str, repo: Optional[str] = None, revision: Optional[str] = None) -> Report:
    """Make ``DIR.partial`` ready to receive files; keep whatever already verifies."""
    report = verify(directory, repo=repo, revision=revision)
    if report["ok"]:
        report["action"] = "none"
        return report
    if not replaceable(directory):
        return _not_replaceable(report, directory)
    staging = staging_dir(directory)
    same_source = not report["error"] and os.path.isdir(directory)
    if same_source and not os.path.lexists(staging):
        # DIR no longer verifies: move it aside so only its bad files travel again.
        os.rename(directory, staging)
        make_writable_dirs(staging)
        for bad in report["bad"]:
            remove_below(staging, bad["path"])
        report["action"] = "repair"
    else:
        os.makedirs(staging, exist_ok=True)
        make_writable_dirs(staging)
        report["action"] = "resume" if os.listdir(staging) else "fresh"
    report["dir"] = staging
    return report


def _resolve_owner(owner: str) -> Tuple[int, int]:
    import grp
    import pwd

    user, _, group = owner.partition(":")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ValueError("owner %r: no such user on this host" % user) from None
    gid = entry.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError("owner %r: no such group on this host" % group) from None
    return entry.pw_uid, gid


def _seal(root: str, manifest: Dict[str, Any], ids: Optional[Tuple[int, int]]) -> Dict[str, StatKey]:
    """Give the files to their owner, make them read-only, the manifest root's, and return the files'
    final stat keys."""
    keys: Dict[str, StatKey] = {}
    root_fd = open_dir(root)
    try:
        for entry in manifest["files"]:
            handle = open_regular(root_fd, entry["path"])
            try:
                _set_owner_mode(handle, ids, FILE_MODE)
                keys[entry["path"]] = stat_key(os.fstat(handle))
            finally:
                os.close(handle)
        handle = open_regular(root_fd, META_DIR + "/" + MANIFEST_NAME)
        try:
            _set_owner_mode(handle, ROOT_IDS, META_FILE_MODE)
        finally:
            os.close(handle)
    finally:
        os.close(root_fd)
    return keys


def _set_owner_mode(fd: int, ids: Optional[Tuple[int, int]], mode: int) -> None:
    if ids is not None:
        os.fchown(fd, ids[0], ids[1])
    os.fchmod(fd, mode)


def _seal_dirs(root: str, ids: Optional[Tuple[int, int]]) -> None:
    # Directories only: touching a listed file again would change its ctime and void the fresh stamp.
    # Deepest first, so that a directory made read-only is never written to again.
    for current, _dirs, _files, fd in os.fwalk(root, topdown=False, follow_symlinks=False):
        meta = os.path.relpath(current, root).split(os.sep)[0] == META_DIR
        _set_owner_mode(fd, ROOT_IDS if meta else ids, META_DIR_MODE if meta else DIR_MODE)


def finalize(
    directory: str,
    owner: Optional[str] = None,
    repo: Optional[str] = None,
    revision: Optional[str] = None,
) -> Report:
    """Verify ``DIR.partial``, seal it and rename it over ``DIR``."""
    staging = staging_dir(directory)
    ids = _resolve_owner(owner) if owner else None
    if not os.path.isdir(staging):
        report = _new_report(directory)
        report["error"] = "no staging directory %s to finalize" % staging
        return report
    if not replaceable(directory):
        return _not_replaceable(_new_report(directory), directory)
    make_writable_dirs(staging)
    report = verify(staging, repo=repo, revision=revision)
    if not report["ok"]:
        return report
    for name in LEFTOVER_DIRS:
        remove_tree(os.path.join(staging, name))
    remove_tree(os.path.join(staging, META_DIR, PARTIAL_DIR))
    manifest, manifest_digest = load_manifest(staging)
    listed = {entry["path"] for entry in manifest["files"]}
    for current, dirs, files, fd in os.fwalk(staging, follow_symlinks=False):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(current, name), staging).replace(os.sep, "/")
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            unlisted = stat.S_ISREG(st.st_mode) and rel not in listed and not rel.startswith(META_DIR + "/")
            if stat.S_ISLNK(st.st_mode) or unlisted:
                # Unlisted files (an excluded pattern, an older revision's file) are not part of the set.
                os.unlink(name, dir_fd=fd)
    keys = _seal(staging, manifest, ids)
    _write_stamp(staging, manifest_digest, keys)
    _seal_dirs(staging, ids)
    old = "%s.old.%d" % (directory.rstrip("/"), os.getpid())
    if os.path.lexists(directory):
        os.rename(directory, old)
    os.rename(staging, directory)
    remove_tree(old)
    report["dir"] = directory
    report["stamp"] = "updated"
    report["action"] = "finalized"
    return report


def _summary(report: Report, command: str) -> str:
    if report["error"]:
        return "%s: %s" % (report["dir"], report["error"])
    if report["ok"]:
        hashed = len(report["hashed"])
        return "%s: %s verified (%d files, %d bytes, %d hashed)%s" % (
            report["dir"],
            report["revision"][:12],
            report["files"],
            report["bytes"],
            hashed,
            (", " + report["action"]) if report["action"] else "",
        )
    bad = "; ".join("%s: %s" % (b["path"], b["reason"]) for b in report["bad"])
    prefix = "%s: %s" % (report["dir"], report["action"]) if command == "prepare" else report["dir"]
    return "%s: NOT verified: %s" % (prefix, bad)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="weights_verify.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("verify", "prepare", "finalize"):
        cmd = sub.add_parser(name)
        cmd.add_argument("dir")
        cmd.add_argument("--repo")
        cmd.add_argument("--revision")
        cmd.add_argument("--json", action="store_true", help="print the report as one JSON object")
        if name == "verify":
            cmd.add_argument("--full", action="store_true", help="hash every file, ignoring the stamp")
        if name == "finalize":
            cmd.add_argument("--owner", help="USER[:GROUP] that owns the finalized directory")
    args = parser.parse_args(argv)
    directory = os.path.abspath(args.dir)
    try:
        if args.command == "verify":
            report = verify(directory, full=args.full, repo=args.repo, revision=args.revision)
        elif args.command == "prepare":
            report = prepare(directory, repo=args.repo, revision=args.revision)
        else:
            report = finalize(directory, owner=args.owner, repo=args.repo, revision=args.revision)
    except (OSError, ValueError, ManifestError) as err:
        report = _new_report(directory)
        report["error"] = str(err)
        code = 2
    else:
        code = 0 if report["ok"] or (args.command == "prepare" and report["action"]) else 1
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        stream = sys.stdout if code == 0 else sys.stderr
        stream.write(_summary(report, args.command) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
