"""One host's desired state, computed once from its merged config and OS: what both engines apply.

``HostPlan`` composes the core's decisions (``provision.provision_plan``, ``serving.plan_host``,
``secrets``, ``weights.request``) into plain typed data: packages and holds, the apt source and its key,
every managed file with its exact bytes, units and their wanted states, the image and how it is obtained,
the weights, secret references (never values), replicas, gates, the reboot policy, and a digest over all
of it. ``to_json()`` is what ``ms4fleet plan --json`` prints and what the Ansible collection reads.

+ ``host_plan(config, os=None, image_archive=None, staging_dir=None)``: ``os`` None means ``DEFAULT_OS``
  (no probe yet); the JSON says which (``os.source``).
+ ``host_plan(..., excluded=...)``: replicas only on the GPUs the health check did not exclude
  (``ms4fleet.health.exclusions``); the JSON then names each excluded GPU and each replica left out, with why.
+ ``plan_for_data(config, data, os=None, excluded=())``: the same, with the controller-side inputs read from the host's
  inventory data (``IMAGE_ARCHIVE_KEYS``, ``STAGING_DIR_KEYS``).
+ ``plan_for_data(..., stack=stack_for(config, probe_report))``: what the host already has decides the driver
  and Docker groups (``ms4fleet.adopt``: adopt, keep, upgrade, take over or refuse); the JSON's ``stack`` says why.
+ ``digest_of(doc)``: the sha256 of a plan's JSON (without its ``digest``), to check one read back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Literal

from ms4fleet import healthwatch, paths
from ms4fleet.adopt import StackPlan, decide
from ms4fleet.config import ConfigError, HostConfig
from ms4fleet.health import Exclusion
from ms4fleet.hostside.weights_verify import manifest_path
from ms4fleet.imagearchive import archive_image_id
from ms4fleet.probe import ProbeReport
from ms4fleet.provision import (
    DAEMON_JSON,
    KEYRING,
    NOUVEAU_FILE,
    PERSISTENCE_DROPIN,
    PREFERENCES_FILE,
    REBOOT_REQUIRED,
    SERVICE_SHELL,
    SOURCES_FILE,
    UNATTENDED_FILE,
    OsRelease,
    Packages,
    Pin,
    ProvisionPlan,
    daemon_json,
    daemon_key_digests,
    driver_package,
    provision_plan,
)
from ms4fleet.proxy import PROXY_CONF
from ms4fleet.secrets import env_file_script, secret_path, service_secret_refs
from ms4fleet.serving import Replica, ServingPlan, local_address, plan_host, url_host
from ms4fleet.verify import DEFAULT_CHECKS, DEFAULT_TIMEOUT_S, checks_for_profile
from ms4fleet.weights.errors import WeightsError
from ms4fleet.weights.manifest import COMMIT
from ms4fleet.weights.request import WeightsRequest, request_for_host
from ms4fleet.weights.stage import DEFAULT_STAGING
from ms4fleet.weights.startcheck import HOST_VERIFIER_PATH

SCHEMA = 1
# The OS a plan is made for before any host was read (the sim's hosts run it; a probe or facts replace it).
DEFAULT_OS = OsRelease("debian", "12")
# What each managed file is, by path (engines that split files across roles select by kind).
_KINDS = {
    SOURCES_FILE: "repository",
    PREFERENCES_FILE: "pin",
    NOUVEAU_FILE: "nouveau",
    PERSISTENCE_DROPIN: "unit-dropin",
    HOST_VERIFIER_PATH: "weights-verifier",
    PROXY_CONF: "proxy",
    UNATTENDED_FILE: "unattended-upgrades",
    **dict.fromkeys(healthwatch.PATHS, "health-watch"),
}
# Inventory keys of a plan's controller-side inputs: pyinfra's host data key, then the Ansible role variable.
IMAGE_ARCHIVE_KEYS = ("vllm_image_archive", "vllm_service_image_archive")
STAGING_DIR_KEYS = ("weights_staging_dir", "model_weights_staging_dir")
OsSource = Literal["default", "probe"]
ImageObtain = Literal["pull", "load", "none"]


def _fields_json(part: Any) -> dict[str, Any]:
    """A plan part's fields as JSON data, in field order (tuples become lists)."""
    return {f.name: list(v) if isinstance(v := getattr(part, f.name), tuple) else v for f in dataclasses.fields(part)}


class _Part:
    """A part of the plan whose JSON is its fields."""

    def to_json(self) -> dict[str, Any]:
        return _fields_json(self)


@dataclass(frozen=True)
class PlannedFile:
    """A file an engine writes with exactly these bytes."""

    path: str
    content: str
    mode: int
    owner: str
    group: str
    kind: str
    # What an engine runs on the host after it changed this file, where argv[0] exists there.
    after_change: tuple[str, ...] = ()

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {**_fields_json(self), "sha256": self.sha256, "mode": f"{self.mode:04o}"}


@dataclass(frozen=True)
class MergedFile(PlannedFile):
    """A file whose ms4fleet keys are merged into what the host has (Docker's daemon.json): ``content`` is
    the bytes on a host that had none; on any other host, ``merge(current)`` gives them."""

    kind: str = "daemon-json"

    def to_json(self) -> dict[str, Any]:
        # Per key a digest of ms4fleet's value: a recorded plan tells a change dockerd reloads from a restart.
        return {**super().to_json(), "merged": True, "keys": daemon_key_digests(self.content)}


@dataclass(frozen=True)
class ServiceUser(_Part):
    """The account the service runs as: created as a system user with no home and this shell when missing;
    an existing account is left as it is (it may be a login account chosen on purpose)."""

    name: str
    shell: str


@dataclass(frozen=True)
class PackageGroup:
    group: str
    names: tuple[str, ...]
    hold: bool
    # The apt preferences (the preferences file's) that pin packages of this group.
    pins: tuple[Pin, ...]

    def to_json(self) -> dict[str, Any]:
        pins = [{"names": list(p.names), "version": p.version} for p in self.pins]
        return {"group": self.group, "names": list(self.names), "hold": self.hold, "pins": pins}


@dataclass(frozen=True)
class Unit(_Part):
    name: str
    enabled: bool
    active: bool
    role: Literal["provision", "replica"]


@dataclass(frozen=True)
class Image(_Part):
    """The vLLM image and how a host gets it: ``pull`` when it has no image ``ref``; ``load`` the controller's
    archive when its image ``ref`` is not ``id`` (the archive's); ``none`` when vLLM runs from a venv."""

    ref: str | None
    obtain: ImageObtain
    archive: str | None
    id: str | None


@dataclass(frozen=True)
class Peers:
    """Staging through the peer tree (``weights.peers``): each host feeds ``fanout`` others, the source feeds
    ``seeds`` hosts, a feeding host serves on ``address`` (None: the address the controller reaches it at),
    ``port``."""

    address: str | None
    fanout: int
    seeds: int
    port: int


@dataclass(frozen=True)
class Weights:
    request: WeightsRequest
    staging_dir: str
    peers: Peers | None = None

    def to_json(self) -> dict[str, Any]:
        r = self.request
        return {
            "source": r.source,
            "repo_id": r.repo_id,
            "revision": r.revision,
            "profile": r.profile,
            "include": list(r.include),
            "exclude": list(r.exclude),
            "mirror_url": r.mirror_url,
            "manifest_sha256": r.manifest_sha256,
            "allow_insecure": r.allow_insecure,
            "path": r.path,
            "token": None if r.token is None else {"file": r.token.file, "env": r.token.env},
            "dest": r.dest,
            "owner": r.owner,
            "manifest": manifest_path(r.dest),
            "staging_dir": self.staging_dir,
            "peers": None if self.peers is None else asdict(self.peers),
        }


@dataclass(frozen=True)
class SecretRef(_Part):
    """Where one secret of the service comes from and lands: a reference, never its value."""

    variable: str
    name: str
    host_path: str
    file: str | None
    env: str | None
    # The controller's generated key (ms4fleet.apikey): the plan says so, never which key.
    generated: bool


@dataclass(frozen=True)
class Secrets:
    refs: tuple[SecretRef, ...]
    # Built on the host by ``script`` from the secret files (mode 0600, root): its bytes are secret.
    env_file: str
    script: str

    def to_json(self) -> dict[str, Any]:
        return {
            "needed": bool(self.refs),
            "refs": [r.to_json() for r in self.refs],
            "secrets_dir": paths.SECRETS_DIR,
            "env_file": {"path": self.env_file, "mode": "0600", "owner": "root", "group": "root"},
            "script": self.script,
        }


@dataclass(frozen=True)
class ReplicaPlan(Replica):
    """A replica of the serving plan; its unit's bytes are the planned file at ``unit_path``."""

    # Where vLLM answers on its host, on ``internal_port`` (the gates reach it there through the engine's
    # connection; clients reach ``port`` through the host proxy).
    address: str
    unit_path: str

    def to_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in _fields_json(self).items() if k != "unit_text"}
        # Where vLLM itself answers, from its own host (the Ansible rollout's drain reads its metrics there).
        return {**doc, "url": f"http://{url_host(self.address)}:{self.internal_port}"}


@dataclass(frozen=True)
class AptSource(_Part):
    """NVIDIA's apt repository: the sources file (in ``files``) names it; the key is downloaded from ``key_url``
    and installed only when it holds the pinned ``key_fingerprint``."""

    url: str
    suite: str
    components: tuple[str, ...]
    key_url: str
    key_fingerprint: str
    keyring: str
    sources_file: str


@dataclass(frozen=True)
class ServingSummary(_Part):
    model: str
    served_model_name: str
    tp: int
    max_model_len: int
    model_dir: str
    verdict: str
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Gates:
    headroom_utilization: float
    verify_checks: tuple[str, ...]
    verify_timeout_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            # Before any replica (re)starts: each must fit in the GPU memory free now at this utilization.
            "headroom": {"gpu_memory_utilization": self.headroom_utilization, "blocks_on": "does-not-fit"},
            "verify": {"checks": list(self.verify_checks), "timeout_s": self.verify_timeout_s},
        }


@dataclass(frozen=True)
class HostPlan:
    host: str
    os: OsRelease
    os_source: OsSource
    runtime: str
    service_user: ServiceUser
    packages: tuple[PackageGroup, ...]
    apt: AptSource
    files: tuple[PlannedFile, ...]
    merged_files: tuple[MergedFile, ...]
    units: tuple[Unit, ...]
    image: Image
    weights: Weights | None
    secrets: Secrets
    replicas: tuple[ReplicaPlan, ...]
    serving_summary: ServingSummary
    gates: Gates
    reboot: str
    notes: tuple[str, ...]
    # The core's plans this one was made from, for engine code that calls the core with them (gates).
    config: HostConfig = field(repr=False, compare=False)
    provision: ProvisionPlan = field(repr=False, compare=False)
    serving: ServingPlan = field(repr=False, compare=False)

    @property
    def held(self) -> tuple[str, ...]:
        return tuple(name for group in self.packages if group.hold for name in group.names)

    def group(self, name: str) -> PackageGroup | None:
        return next((g for g in self.packages if g.group == name), None)

    def dropin_unit(self, f: PlannedFile) -> str:
        """The unit a ``unit-dropin`` file belongs to, named as in ``units`` (its directory's name less
        ``.service.d``): reloaded and restarted when the drop-in changes."""
        return f.path.rsplit("/", 2)[-2].removesuffix(".d").removesuffix(".service")

    def file(self, path: str) -> PlannedFile:
        return next(f for f in self.files if f.path == path)

    def require_weights(self) -> Weights:
        """The weights, or the core's error for a host without a ``weights`` section or a pinned revision."""
        if self.weights is None:
            request_for_host(self.config)  # raises, with the core's message
            raise WeightsError(f"{self.host}: weights.revision is not pinned")
        return self.weights

    def _body(self, contents: dict[str, str] | None) -> dict[str, Any]:
        def file_json(f: PlannedFile) -> dict[str, Any]:
            doc = f.to_json()
            if contents is not None:
                contents[doc["sha256"]] = doc.pop("content")
            return doc

        return {
            "schema": SCHEMA,
            "host": self.host,
            "os": {**self.os.to_json(), "source": self.os_source},
            "runtime": self.runtime,
            "service_user": self.service_user.to_json(),
            "packages": [g.to_json() for g in self.packages],
            "held": list(self.held),
            "apt": self.apt.to_json(),
            "files": [file_json(f) for f in self.files],
            "merged_files": [file_json(f) for f in self.merged_files],
            "units": [u.to_json() for u in self.units],
            "image": self.image.to_json(),
            "weights": None if self.weights is None else self.weights.to_json(),
            "secrets": self.secrets.to_json(),
            "serving": self.serving_summary.to_json(),
            "replicas": [r.to_json() for r in self.replicas],
            "gates": self.gates.to_json(),
            "reboot": {
                "policy": self.reboot,
                "reboot_required_file": REBOOT_REQUIRED,
                "when": "the driver changed and the OS asks for it, or the loaded module is not the installed driver",
            },
            "notes": list(self.notes),
            # Only where the health check excluded a GPU: a healthy host's plan is the plan made without one.
            **({"health": self.health} if self.serving.excluded else {}),
            # Only where the host's probe was read: what it has and what ms4fleet does about it (ms4fleet.adopt).
            **({"stack": self.stack_json} if self.provision.stack else {}),
        }

    @property
    def health(self) -> dict[str, Any]:
        """The GPUs excluded and the replica slots left empty, with why (``ms4fleet plan`` prints them)."""
        return {
            "excluded_gpus": [e.to_json() for e in self.serving.excluded],
            "missing_replicas": [m.to_json() for m in self.serving.missing],
        }

    @property
    def stack_json(self) -> dict[str, Any]:
        stack = self.provision.stack
        assert stack is not None
        return {**stack.to_json(), "before_driver_install": list(stack.before_driver_install())}

    @cached_property
    def digest(self) -> str:
        return digest_of(self._body({}))

    def to_json(self, contents: dict[str, str] | None = None) -> dict[str, Any]:
        """Plain JSON data, stable for the same inputs; ``digest`` covers every other key. With ``contents``,
        each file's bytes go there under their sha256 instead of into the file's entry (a fleet's plans share
        most files: ``ms4fleet plan --json`` prints each once)."""
        return {**self._body(contents), "digest": self.digest}


def digest_of(doc: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of a plan without its ``digest``; a file's bytes count through their
    sha256, recomputed from ``content`` where the entry has it (so changed bytes change the digest)."""

    def canonical(f: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in f.items() if k != "content"}
        if "content" in f:
            out["sha256"] = hashlib.sha256(f["content"].encode()).hexdigest()
        return out

    body = {k: v for k, v in doc.items() if k != "digest"}
    for key in ("files", "merged_files"):
        body[key] = [canonical(f) for f in body.get(key, [])]
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def host_plan(
    config: HostConfig,
    os: OsRelease | None = None,
    image_archive: str | None = None,
    staging_dir: str | None = None,
    excluded: tuple[Exclusion, ...] = (),
    stack: StackPlan | None = None,
) -> HostPlan:
    """The plan of one host. ``image_archive``: a ``docker save`` archive on the controller to load instead
    of pulling; ``staging_dir``: the controller's weights staging directory (default ``DEFAULT_STAGING``);
    ``excluded``: GPUs no replica may use; ``stack``: the decision for what the host has (``stack_for``)."""
    image_id = None
    if image_archive:
        try:
            image_id = archive_image_id(image_archive)
        except ValueError as err:
            raise ConfigError(config.name, "image archive", f"{err}: point it at a readable archive") from None
    inputs = _Inputs(os, image_archive or None, image_id, staging_dir or None, tuple(sorted(set(excluded))), stack)
    try:
        # Fleets repeat a handful of host shapes: each is planned once, then named for the host.
        shape = _shape_plan(config.model_dump_json(exclude={"name"}), inputs)
    except (ConfigError, WeightsError):
        return _build(config, inputs)  # raises again, naming this host
    return dataclasses.replace(
        shape, host=config.name, config=config, serving=dataclasses.replace(shape.serving, host=config.name)
    )


@dataclass(frozen=True)
class _Inputs:
    """What a host's plan depends on besides its config (hashable: the key of a shape's plan)."""

    os: OsRelease | None
    image_archive: str | None
    image_id: str | None
    staging_dir: str | None
    excluded: tuple[Exclusion, ...]
    stack: StackPlan | None


@lru_cache(maxsize=256)
def _shape_plan(config_json: str, inputs: _Inputs) -> HostPlan:
    # Nothing planned depends on the host's name but error messages: validate under a neutral one.
    config = HostConfig.model_validate({**json.loads(config_json), "name": "-"})
    return _build(config, inputs)


def _build(config: HostConfig, inputs: _Inputs) -> HostPlan:
    os, image_archive, image_id = inputs.os, inputs.image_archive, inputs.image_id
    staging_dir, excluded, stack = inputs.staging_dir, inputs.excluded, inputs.stack
    provision = provision_plan(config, os or DEFAULT_OS, stack)
    serving = plan_host(config, excluded=excluded)
    # No weights without a pinned revision: ``require_weights`` then fails the deploy with the core's message.
    pinned = config.weights is not None and COMMIT.match(config.weights.revision or "") is not None
    weights = None
    if pinned and config.weights is not None:
        w = config.weights
        peers = Peers(w.peer_address, w.peer_fanout, w.peer_seeds, w.peer_port) if w.peers else None
        weights = Weights(request_for_host(config), staging_dir or str(DEFAULT_STAGING), peers)
    files = [
        PlannedFile(f.path, f.content, f.mode, f.owner, f.group, _KINDS.get(f.path, "other"), f.after_change)
        for f in provision.files
    ]
    files += [
        PlannedFile(f"{paths.SYSTEMD_DIR}/{r.unit_name}", r.unit_text, 0o644, "root", "root", "unit")
        for r in serving.replicas
    ]
    # daemon.json also where Docker is adopted (docker-ce): merged into the engine the host has.
    docker_runtime = config.runtime.kind == "docker"
    merged = (MergedFile(DAEMON_JSON, daemon_json(None, config), 0o644, "root", "root"),) if docker_runtime else ()
    units = [Unit(name, True, True, "provision") for name in provision.enabled_services]
    units += [Unit(r.unit_name, True, True, "replica") for r in serving.replicas]
    if serving.image is None:
        image = Image(None, "none", None, None)
    elif image_archive:
        image = Image(serving.image, "load", image_archive, image_id)
    else:
        image = Image(serving.image, "pull", None, None)
    return HostPlan(
        host=config.name,
        os=provision.os,
        os_source="default" if os is None else "probe",
        runtime=config.runtime.kind,
        service_user=ServiceUser(provision.service_user, SERVICE_SHELL),
        packages=tuple(_groups(provision)),
        apt=AptSource(
            url=provision.nvidia_repo.url,
            suite=provision.nvidia_repo.suite,
            components=tuple(provision.nvidia_repo.components),
            key_url=provision.nvidia_repo.key_url,
            key_fingerprint=provision.nvidia_repo.key_fingerprint,
            keyring=KEYRING,
            sources_file=SOURCES_FILE,
        ),
        files=tuple(files),
        merged_files=merged,
        units=tuple(units),
        image=image,
        weights=weights,
        secrets=Secrets(
            tuple(
                SecretRef(variable, name, secret_path(ref, name), ref.file, ref.env, ref.generated)
                for variable, (name, ref) in service_secret_refs(config).items()
            ),
            paths.ENV_FILE,
            env_file_script(config),
        ),
        replicas=tuple(
            ReplicaPlan(
                **{f.name: getattr(r, f.name) for f in dataclasses.fields(r)},
                address=local_address(config),
                unit_path=f"{paths.SYSTEMD_DIR}/{r.unit_name}",
            )
            for r in serving.replicas
        ),
        serving_summary=ServingSummary(
            model=serving.profile.id,
            served_model_name=serving.served_model_name,
            tp=serving.tp,
            max_model_len=serving.max_model_len,
            model_dir=serving.model_dir,
            verdict=serving.verdict,
            reasons=tuple(serving.sizing.reasons),
            warnings=tuple(serving.warnings),
        ),
        gates=gates(config, serving),
        reboot=config.provision.reboot,
        notes=provision.notes,
        config=config,
        provision=provision,
        serving=serving,
    )


def gates(config: HostConfig, serving: ServingPlan) -> Gates:
    """The per-host gates: headroom before any replica (re)starts, the endpoint checks after."""
    return Gates(
        headroom_utilization=config.serving.gpu_memory_utilization,
        verify_checks=tuple(sorted(DEFAULT_CHECKS & checks_for_profile(serving.profile))),
        verify_timeout_s=DEFAULT_TIMEOUT_S,
    )


def stack_for(config: HostConfig, report: ProbeReport | None) -> StackPlan | None:
    """The decision for what a probed host already has (None without a probe)."""
    return None if report is None else decide(config, report, driver_package(config))


def plan_for_data(
    config: HostConfig,
    data: Mapping[str, Any],
    os: OsRelease | None = None,
    excluded: tuple[Exclusion, ...] = (),
    stack: StackPlan | None = None,
) -> HostPlan:
    """``host_plan`` with the image archive and staging directory the host's inventory data names."""

    def first(keys: tuple[str, ...]) -> str | None:
        return next((str(data[k]) for k in keys if data.get(k)), None)

    return host_plan(
        config,
        os,
        image_archive=first(IMAGE_ARCHIVE_KEYS),
        staging_dir=first(STAGING_DIR_KEYS),
        excluded=excluded,
        stack=stack,
    )


def _groups(plan: ProvisionPlan) -> list[PackageGroup]:
    named: list[tuple[str, Packages | None]] = [
        ("base", plan.base),
        ("driver", plan.driver),
        ("fabric_manager", plan.fabric_manager),
        ("cuda", plan.cuda),
        ("docker", plan.docker),
        ("container_toolkit", plan.container_toolkit),
    ]
    out = []
    for name, group in named:
        if group is not None:
            pins = tuple(p for p in plan.pins if set(p.names) & set(group.names))
            out.append(PackageGroup(name, group.names, group.hold, pins))
    return out
