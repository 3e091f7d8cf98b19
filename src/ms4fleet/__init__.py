"""ms4fleet: the core that decides what a GPU host serving Mistral Small 4 on vLLM must look like."""

__version__ = "0.1.0"
