"""Rollout policy: releases, waves, gates, the per-host state machine, the load balancer's config and the
report. Pure decisions and rendered bytes; the engines (pyinfra driver, Ansible playbook) apply them.

+ ``release``: what a host serves (image, argv, weights revision, units) as a content-addressed record.
+ ``waves``: canary, then waves, bounded by max-unavailable, hosts in inventory order.
+ ``hoststate``: pre-stage -> drain -> stop -> start -> verify -> rejoin | rollback, with timings.
+ ``gates``: what a failure means (roll back, stop) and the rollout's exit code.
+ ``lb``: nginx upstream text with drained hosts marked ``down``; the in-flight drain wait.
+ ``report``, ``html``: the final JSON report and a self-contained HTML page.
"""
