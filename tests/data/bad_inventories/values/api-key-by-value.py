# expect: gpu-43 serving.api_key
# secret: sk-prod-0a1b2c3d4e5f
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-43",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"api_key": "sk-prod-0a1b2c3d4e5f"},
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
