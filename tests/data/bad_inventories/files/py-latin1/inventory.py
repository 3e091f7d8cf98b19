# réseau
gpus = ["gpu-01"]
