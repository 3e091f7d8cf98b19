# expect: gpu-17 runtime.venv
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-17",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"api_key": {"file": "/etc/ms4fleet/api-key"}},
            "ms4fleet_runtime": {"kind": "native", "image": "vllm/vllm-openai:v0.32.0", "venv": "/opt/my venv"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
