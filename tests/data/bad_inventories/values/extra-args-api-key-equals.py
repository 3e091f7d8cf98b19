# expect: gpu-32 serving.extra_args
# secret: sk-prod-2b8d4f6a0c
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-32",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {
                "api_key": {"file": "/etc/ms4fleet/api-key"},
                "extra_args": ["--api-key=sk-prod-2b8d4f6a0c"],
            },
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
