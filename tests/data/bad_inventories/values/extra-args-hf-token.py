# expect: gpu-34 serving.extra_args
# secret: hf_QwErTyUiOp12345
# pyinfra inventory: one group of one host.
gpus = [
    (
        "gpu-34",
        {
            "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8},
            "ms4fleet_serving": {
                "api_key": {"file": "/etc/ms4fleet/api-key"},
                "extra_args": ["--hf_token=hf_QwErTyUiOp12345"],
            },
            "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"},
            "ms4fleet_weights": {
                "revision": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "hf_token": {"env": "HF_TOKEN"},
            },
        },
    )
]
