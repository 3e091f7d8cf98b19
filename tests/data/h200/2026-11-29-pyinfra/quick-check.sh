echo '--ms4fleet-- fingerprint'
cat /proc/sys/kernel/random/boot_id /etc/machine-id /sys/module/nvidia/version 2>/dev/null
stat -L -c '%n|%s|%i|%y|%z|%a|%u|%g' /etc/apt/keyrings/ms4fleet-nvidia.asc /etc/apt/sources.list.d/ms4fleet-nvidia.sources /etc/docker/daemon.json /etc/group /etc/nginx/conf.d/ms4fleet-proxy.conf /etc/os-release /etc/passwd /etc/systemd/system /etc/systemd/system/ms4fleet-vllm-0.service /usr/local/lib/ms4fleet/weights_verify.py /var/lib/dpkg/status /var/lib/ms4fleet/verified.json 2>/dev/null
find -L /srv/ms4fleet/models/mistralai--Mistral-Small-4-119B-2603/5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e -printf '%p|%s|%i|%T@|%C@|%m|%u|%g\n' 2>/dev/null
echo '--ms4fleet-- services'
systemctl show --property=Id,ActiveState,UnitFileState nginx docker ms4fleet-vllm-0.service 2>/dev/null
echo '--ms4fleet-- image'
docker image inspect --format '{{.Id}}' vllm/vllm-openai:v0.32.0 2>/dev/null

