# expect: ok
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-ok",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"api_key": {"file": "/etc/ms4fleet/api-key"}},
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "source": "mirror",
                "mirror_url": "https://mirror.example/models",
                "revision": "2603-fp8",
                "manifest_sha256": "abababababababababababababababababababababababababababababababab",
                "dir": "/data/ms4fleet",
            },
            "ms4fleet_provision": {
                "nvidia_apt_repo": {
                    "url": "https://mirror.example/cuda/ubuntu2404/x86_64/",
                    "suite": "/",
                    "key_url": "https://mirror.example/cuda/key.asc",
                    "key_fingerprint": "EB693B3035CD5710E231E123A4B469963BF863CC",
                    "components": [],
                }
            },
        },
    )
]
