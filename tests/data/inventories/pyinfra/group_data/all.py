ms4fleet_serving = {"max_num_seqs": 64, "gpu_memory_utilization": 0.9}
ms4fleet_runtime = {"kind": "docker", "image": "vllm/vllm-openai:v0.31.0"}
