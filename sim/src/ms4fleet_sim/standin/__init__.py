"""The vLLM stand-in: ``vllm serve`` for the simulated fleet, standard library only.

The sim's stand-in image runs it as ``/usr/local/bin/vllm`` (``ms4fleet_sim.standin_image``) and accepts
exactly the flags of the real vLLM it mirrors (``flags.json``, extracted by ``flagdump.py``).
"""
