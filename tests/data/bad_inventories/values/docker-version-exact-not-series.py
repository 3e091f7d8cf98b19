# expect: gpu-24 provision.docker_version
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-24",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"api_key": {"file": "/etc/ms4fleet/api-key"}},
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
            "ms4fleet_provision": {"docker_version": "27.5.1-0ubuntu3~24.04.2"},
        },
    )
]
