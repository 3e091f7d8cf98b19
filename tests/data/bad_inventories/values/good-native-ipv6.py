# expect: ok
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-ok",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {
                "api_key": {"file": "/etc/ms4fleet/api-key"},
                "bind_address": "::1",
                "env": {"NCCL_DEBUG_FILE": "/var/log/nccl.%h.%p.log"},
            },
            "ms4fleet_runtime": {"kind": "native", "image": "vllm/vllm-openai:v0.32.0", "venv": "/opt/ms4fleet/vllm"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
