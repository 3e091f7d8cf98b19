# expect: gpu-44 serving.metrics_allow[0]
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-44",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"bind_address": "0.0.0.0", "metrics_allow": ["10.0.0.0/8; allow all"]},
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
