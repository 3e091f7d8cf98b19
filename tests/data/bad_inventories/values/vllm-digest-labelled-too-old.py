# expect: gpu-51 runtime.vllm_version
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-51",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"api_key": {"file": "/etc/ms4fleet/api-key"}},
            "ms4fleet_runtime": {
                "kind": "docker",
                "image": "vllm/vllm-openai@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "vllm_version": "0.8.5",
            },
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
