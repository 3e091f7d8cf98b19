"""Data the pyinfra engine needs for the simulated fleet (group ``sim``), beside what `ms4fleet sim up` writes.

+ weights come from the sim's loopback mirror on the controller (``python -m ms4fleet_sim.weights_mirror``),
  fetched there once and pushed to the hosts over SSH;
+ no registry is reachable, so the vLLM stand-in image travels as a ``docker save`` archive.

Both locations can be moved with MS4FLEET_SIM_MIRROR and MS4FLEET_SIM_IMAGE_ARCHIVE.
"""

import os

# The revision the sim's mirror serves (ms4fleet_sim.weights_mirror.SIM_REVISION; tests keep them equal). Not
# imported: every group_data file here is read with the example inventory too, by installs without the sim.
SIM_REVISION = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"

ms4fleet_weights = {
    "source": "mirror",
    "mirror_url": os.environ.get("MS4FLEET_SIM_MIRROR", "http://127.0.0.1:8765"),
    "revision": SIM_REVISION,
}
vllm_image_archive = os.environ.get("MS4FLEET_SIM_IMAGE_ARCHIVE", os.path.abspath(".sim/vllm-image.tar"))
weights_staging_dir = os.environ.get("MS4FLEET_SIM_STAGING", os.path.abspath(".sim/weights-staging"))
