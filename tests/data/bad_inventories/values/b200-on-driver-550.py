# expect: gpu-48 provision.driver_branch
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-48",
        {
            "ms4fleet_gpu": {"kind": "b200", "count": 8},
            "ms4fleet_serving": {"api_key": {"file": "/etc/ms4fleet/api-key"}},
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
            "ms4fleet_provision": {"driver_branch": 550, "driver_version": "550.163.01"},
        },
    )
]
