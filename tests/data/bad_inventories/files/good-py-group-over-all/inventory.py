gpus = (["gpu-01", "gpu-02"], {"ms4fleet_serving": {"max_num_seqs": 8}})
all = (["gpu-01", "gpu-02"], {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 8}, "ms4fleet_weights": {"source": "path", "path": "/srv/models", "revision": "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"}, "ms4fleet_serving": {"max_num_seqs": 64}})  # noqa: A001
