"""Model weights: fetch at a pinned revision (Hub, mirror or path), verify, stage once for the fleet.

+ ``fetch.fetch_weights(source, dest, profile=..., include=...)``: atomic, resumable, verified fetch.
+ ``hub.HubSource`` / ``mirror.MirrorSource`` / ``localpath.PathSource``: where the bytes come from.
+ ``request.request_for_host(config)`` and ``request.open_source(request)``: from a host's config.
+ ``stage.stage_to_hosts(staged_dir, jobs)``: rsync over SSH to every host, each host verifies.
+ ``ms4fleet.hostside.weights_verify``: the stdlib verifier hosts run (and this package reuses);
  ``startcheck.exec_start_pre(...)`` / ``startcheck.verifier_file()``: the check before every (re)start.
+ ``cli.register(subparsers)``: ``ms4fleet weights fetch|verify|stage``.
"""
