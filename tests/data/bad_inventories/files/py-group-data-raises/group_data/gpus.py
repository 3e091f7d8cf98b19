import os
ms4fleet_serving = {"max_num_seqs": int(os.environ["MS4FLEET_CORPUS_UNSET_SEQS"])}
