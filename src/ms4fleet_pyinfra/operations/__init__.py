"""pyinfra operations applying the core's decisions (each generator re-reads its facts at execution time)."""
