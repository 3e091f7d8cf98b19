"""Example fleet: two 8 x H100 SXM hosts, one 8 x H200, one 8 x B200, and a lone H100 that cannot serve
Mistral Small 4 (ms4fleet plan says why and what would fit).

Plan it without touching any host:   ms4fleet plan inventory/example.py
Deploy it:                           pyinfra inventory/example.py deploy.py
"""

# Settings shared by every host (the "all" group). A host or group setting the same ms4fleet_* key
# replaces this one as a whole.
_all = {
    "ssh_user": "ubuntu",
    "ms4fleet_serving": {
        "model": "mistral-small-4",
        "checkpoint": "fp8",
        "max_num_seqs": 64,
        "gpu_memory_utilization": 0.90,
        "api_key": {"file": "/etc/ms4fleet/api-key"},
        "default_reasoning_effort": "none",
    },
    "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
    "ms4fleet_weights": {
        "source": "hub",
        "revision": "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
        "hf_token": {"env": "HF_TOKEN"},
    },
}

h100 = [
    ("gpu-h100-01", {"ssh_hostname": "10.0.1.11", "ms4fleet_gpu": {"kind": "h100-sxm", "count": 8}}),
    ("gpu-h100-02", {"ssh_hostname": "10.0.1.12", "ms4fleet_gpu": {"kind": "h100-sxm", "count": 8}}),
]
h200 = [("gpu-h200-01", {"ssh_hostname": "10.0.2.11", "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8}})]
b200 = [("gpu-b200-01", {"ssh_hostname": "10.0.3.11", "ms4fleet_gpu": {"kind": "b200", "count": 8}})]
small = [("gpu-h100-solo", {"ssh_hostname": "10.0.9.11", "ms4fleet_gpu": {"kind": "h100-pcie", "count": 1}})]

all = (h100 + h200 + b200 + small, _all)  # noqa: A001 - pyinfra's name for the all group
