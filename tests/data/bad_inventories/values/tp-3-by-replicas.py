# expect: gpu-53 serving.replicas
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-53",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 6},
            "ms4fleet_serving": {
                "api_key": {"file": "/etc/ms4fleet/api-key"},
                "replicas": [{"gpus": [0, 1, 2], "port": 8000}, {"gpus": [3, 4, 5], "port": 8001}],
            },
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
