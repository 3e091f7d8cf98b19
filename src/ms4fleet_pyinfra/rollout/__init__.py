"""The rollout driver for pyinfra: the core's policy (``ms4fleet.rollout``) applied over the pyinfra API, one
``State`` per step of a wave (pyinfra has no rolling facility and ``--serial`` cannot pick the canary).

+ ``driver.Rollout``: read releases, plan waves, then per wave: pre-stage, and per batch of at most
  max-unavailable hosts: drain on the load balancer, switch, verify, rejoin or roll back.
+ ``cli``: ``ms4fleet rollout`` and ``ms4fleet status`` (registered through the ``ms4fleet.commands``
  entry points, so the core never imports this engine).
"""
