"""Parsing what read-only host commands print: batched sections, dpkg-query lines, package versions.

Engine-neutral: the converged check and the pyinfra engine's facts read the same output the same way.
A batched script prints ``--ms4fleet-- NAME`` (``section_marker``) before each part; ``sections`` splits
the output on those lines.
"""

from __future__ import annotations

SEPARATOR = "--ms4fleet--"
# dpkg-query's format for ``installed_packages`` and ``held_packages``: name, version, status abbreviation.
DPKG_FORMAT = r"${Package}\t${Version}\t${db:Status-Abbrev}\n"


def section_marker(name: str) -> str:
    """The shell command that starts section ``name`` of a batched script."""
    return f"echo '{SEPARATOR} {name}'"


def sections(output: list[str]) -> dict[str, list[str]]:
    """A batched script's output by section name; lines before the first marker are dropped."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output:
        if line.startswith(f"{SEPARATOR} "):
            current = out.setdefault(line.split(" ", 1)[1].strip(), [])
        elif current is not None:
            current.append(line)
    return out


def installed_packages(lines: list[str]) -> dict[str, str]:
    """dpkg-query lines -> {package: version} for packages actually installed: the status abbreviation's
    second letter is ``i`` (``ii`` installed, ``hi`` installed and held)."""
    out = {}
    for line in lines:
        bits = line.split("\t")
        if len(bits) == 3 and bits[2][1:2] == "i":
            out[bits[0]] = bits[1]
    return out


def held_packages(lines: list[str]) -> set[str]:
    """dpkg-query lines -> packages on hold: the status abbreviation's first letter is ``h`` (what
    ``apt-mark hold`` sets and ``apt-mark showhold`` reads), so one dpkg query answers both questions."""
    return {bits[0] for bits in (line.split("\t") for line in lines) if len(bits) == 3 and bits[2][:1] == "h"}


def upstream_version(version: str) -> str:
    """``1:580.95.05-0ubuntu1`` -> ``580.95.05``: the driver's own version from a Debian package version."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0] if "-" in version else version.split(":", 1)[-1]
