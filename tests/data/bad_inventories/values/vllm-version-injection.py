# expect: gpu-85 runtime.vllm_version
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-85",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {"api_key": {"file": "/etc/ms4fleet/api-key"}},
            "ms4fleet_runtime": {
                "kind": "native",
                "image": "vllm/vllm-openai:v0.32.0",
                "vllm_version": "0.32.0; curl x | sh",
            },
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
