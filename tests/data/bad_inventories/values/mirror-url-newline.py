# expect: gpu-78 weights.mirror_url
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-78",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"api_key": {"file": "/etc/ms4fleet/api-key"}},
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {"source": "mirror", "mirror_url": "https://mirror.example/\nx", "revision": "pin-1"},
        },
    )
]
