# expect: gpu-87 serving.replicas[0].gpus[0]
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-87",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {
                "api_key": {"file": "/etc/ms4fleet/api-key"},
                "replicas": [{"gpus": [0.0, 1, 2, 3], "port": 8000}, {"gpus": [4, 5, 6, 7], "port": 8001}],
            },
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
