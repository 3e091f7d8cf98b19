a = [("gpu-01", {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 8}, "ms4fleet_weights": {"source": "path", "path": "/srv/models", "revision": "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"}})]
b = [("Gpu-01", {"ms4fleet_gpu": {"kind": "h200-sxm", "count": 8}, "ms4fleet_weights": {"source": "path", "path": "/srv/models", "revision": "3f1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"}})]
