#!/usr/bin/env bash
# How cuda-memory.txt was made: one run on the accelerator machine (1 x H200, driver 580.159.04, torch
# 2.11.0+cu130), output under $OUT. It reads the GPU total three ways: nvidia-smi (NVML, MiB), NVML through
# pynvml (v1 and v2 memory info, bytes) and CUDA (torch.cuda.mem_get_info after creating a context, bytes),
# then what a bf16 matmul (cuBLAS workspace) and a one-rank NCCL all-reduce add outside torch's allocator.
set -o pipefail
d=$OUT/h200-cuda; mkdir -p "$d"; export PATH="$PATH:/usr/local/nvidia/bin"
(date -u +%FT%TZ
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.reserved,memory.used,memory.free --format=csv
nvidia-smi --query-gpu=memory.total,memory.reserved --format=csv,nounits
python3 - <<'PY'
import json, os, torch, pynvml
pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0)
m1 = pynvml.nvmlDeviceGetMemoryInfo(h)
out = {"torch": torch.__version__, "cuda": torch.version.cuda, "name": torch.cuda.get_device_name(0), "nvml_v1": {"total": m1.total, "free": m1.free, "used": m1.used}}
try:
    m2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
    out["nvml_v2"] = {"total": m2.total, "reserved": m2.reserved, "free": m2.free, "used": m2.used}
except Exception as e:
    out["nvml_v2"] = repr(e)
torch.zeros(1, device="cuda"); torch.cuda.synchronize()
free, total = torch.cuda.mem_get_info()
out["cuda_mem_get_info_after_context"] = {"free": free, "total": total, "used": total - free, "torch_reserved": torch.cuda.memory_reserved()}
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = a @ a; torch.cuda.synchronize()
f2, _ = torch.cuda.mem_get_info(); r2 = torch.cuda.memory_reserved()
out["after_bf16_matmul"] = {"used": total - f2, "torch_reserved": r2, "non_torch": total - f2 - r2}
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29555")
import torch.distributed as dist
try:
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda:0"))
    x = torch.ones(1 << 20, device="cuda"); dist.all_reduce(x); torch.cuda.synchronize()
    f3, _ = torch.cuda.mem_get_info(); r3 = torch.cuda.memory_reserved()
    out["after_nccl_world1_allreduce"] = {"used": total - f3, "torch_reserved": r3, "non_torch": total - f3 - r3}
    dist.destroy_process_group()
except Exception as e:
    out["after_nccl_world1_allreduce"] = repr(e)
print(json.dumps(out, indent=1))
PY
) 2>&1 | tee "$d/h200-memory.txt"
