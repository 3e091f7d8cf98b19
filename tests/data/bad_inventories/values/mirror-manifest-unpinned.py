# expect: gpu-88 weights.manifest_sha256
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-88",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"api_key": {"file": "/etc/ms4fleet/api-key"}},
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "source": "mirror",
                "mirror_url": "https://mirror.example/models",
                "revision": "pin-1",
            },
        },
    )
]
