"""Precedence fixture: the same ms4fleet_* keys set by the inventory's own groups/hosts and by group_data/.

tests/unit/test_plan_equals_apply.py checks that `ms4fleet plan --json` reads this exactly as
`pyinfra fleet.py debug-inventory` does.
"""

_all = {"ssh_user": "ubuntu", "ms4fleet_runtime": {"kind": "docker", "image": "vllm/vllm-openai:v0.32.0"}}

# group data in the inventory itself AND in group_data/h100.py: pyinfra lets group_data/ win.
h100 = (
    [
        ("gpu-h100-01", {"ssh_hostname": "10.0.1.11", "ms4fleet_serving": {"max_model_len": 131072}}),
        ("gpu-h100-02", {"ssh_hostname": "10.0.1.12", "ms4fleet_serving": {"max_num_seqs": 8}}),
    ],
    {"ms4fleet_gpu": {"kind": "h100-sxm", "count": 8}, "ms4fleet_serving": {"max_model_len": 32768}},
)
# a host in two groups that both set ms4fleet_serving: pyinfra lets the later group win, which nobody reading
# the inventory can see, so ms4fleet refuses it unless the host settles it (gpu-h100-02 does, above).
canary = ([("gpu-h100-02", {})], {"ms4fleet_serving": {"max_num_seqs": 16}})
h200 = [("gpu-h200-01", {"ssh_hostname": "10.0.2.11", "ms4fleet_gpu": {"kind": "h200-sxm", "count": 8}})]

all = (h100[0] + h200, _all)  # pyinfra's name for the all group
