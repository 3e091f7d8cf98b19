"""The vLLM stand-in: ``vllm serve`` for the simulated fleet, standard library only.

It is installed as ``/usr/local/bin/vllm`` in the sim's stand-in image (see ``bin/vllm``) and accepts
exactly the flags of the real vLLM it mirrors (``flags.json``, extracted by ``flagdump.py``).
"""
