# expect: gpu-52 serving.tensor_parallel_size
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-52",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 6},
            "ms4fleet_serving": {"api_key": {"file": "/etc/ms4fleet/api-key"}, "tensor_parallel_size": 6},
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
