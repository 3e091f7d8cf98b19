# expect: gpu-42 serving.extra_args[1]
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-42",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {
                "api_key": {"file": "/etc/ms4fleet/api-key"},
                "extra_args": ["--seed", "0\n--api-key"],
            },
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
