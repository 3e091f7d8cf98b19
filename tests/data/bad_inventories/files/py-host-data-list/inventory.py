gpus = [("gpu-01", ["ms4fleet_gpu"])]
