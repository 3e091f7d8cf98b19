"""The pyinfra engine: facts that read a GPU host cheaply, and operations that apply what the ms4fleet core
decides (``deploy.py`` at the repository root wires them together per host)."""
