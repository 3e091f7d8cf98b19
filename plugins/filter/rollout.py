"""Filters for ``playbooks/rollout.yml``: the core's rollout policy (``ms4fleet.rollout``), nothing decided here.

+ ``ansible_play_hosts_all | ms4fleet.fleet.rollout_serial(canary, wave, max_unavailable)``: the play's
  ``serial`` list (canary, then waves split into batches of at most max_unavailable hosts; None: the core's);
  ``rollout_batches`` (same arguments): the host names of each batch, for a play whose hosts are not an
  inventory group (site.yml's, whose order the plays must take from the core).
+ ``gpu_hostvars | ms4fleet.fleet.rollout_pins``: per Docker host, its ``ms4fleet_runtime`` with the image
  pinned to the digest its registry serves now (``ms4fleet.imagepin``; one resolution per image).
+ ``hostvars[inventory_hostname] | ms4fleet.fleet.rollout_release``: the release (id, units) the host's
  settings describe; ``release | ms4fleet.fleet.rollout_paths``: where its record, staged units, installed
  units and the load balancer's config live on the hosts.
+ ``record_text | ms4fleet.fleet.rollout_record(release, host)``: the host's release record after a verified
  switch (previous kept); ``record_text | ms4fleet.fleet.rollout_current(host)``: the release it runs now.
+ ``read.stdout | ms4fleet.fleet.rollout_deploy_change(hostvars[inventory_hostname], converged)``: what a plain
  deploy's change does to the host (``read``: the output of ``where.read_script``): ``change`` (none, live,
  replica-restart, docker-restart, reboot), ``reasons`` and ``disruptive`` (drain it first).
+ ``gpu_hostvars | ms4fleet.fleet.rollout_nginx_conf(down=[...], lb_vars=hostvars[lb])``: the load balancer's
  config text (TLS from the LB host's ``lb_tls_*``); ``hostvars[lb] | ms4fleet.fleet.rollout_lb_key_check``:
  shell that refuses its TLS key unless it is root's alone.
+ ``metrics_text | ms4fleet.fleet.rollout_in_flight``: requests a replica still runs or holds.
+ ``units | ms4fleet.fleet.rollout_switch(source_dir)``: the shell that stops every replica unit on the host,
  removes those not in ``units``, installs ``units`` from ``source_dir`` and starts them (returns once they
  are ready); ``units | ms4fleet.fleet.rollout_stop``: stop and disable them (no release to go back to).
+ ``hostvars[inventory_hostname] | ms4fleet.fleet.rollout_replicas(release)``: each replica of a release
  (``unit``, vLLM's ``port``, ``url`` on the host).
+ ``conf_texts | ms4fleet.fleet.rollout_routed_out``: hosts the load balancers' configs mark down now;
  ``gpu_hostvars | ms4fleet.fleet.rollout_lb_out(out_before)``: hosts to keep out, from each host's
  ``rollout_phase`` fact (set by the playbook: drained, verified, rolled-back) and who was out before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.ms4fleet.fleet.plugins.plugin_utils.requirement import core_filters

NAMES = (
    "rollout_serial",
    "rollout_batches",
    "rollout_pins",
    "rollout_release",
    "rollout_paths",
    "rollout_current",
    "rollout_record",
    "rollout_deploy_change",
    "rollout_nginx_conf",
    "rollout_lb_key_check",
    "rollout_in_flight",
    "rollout_switch",
    "rollout_stop",
    "rollout_replicas",
    "rollout_routed_out",
    "rollout_lb_out",
)


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return core_filters("rollout_filters", NAMES)
