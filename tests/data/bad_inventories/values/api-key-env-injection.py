# expect: gpu-47 serving.api_key.env
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-47",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"api_key": {"env": "KEY$(reboot)"}},
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
