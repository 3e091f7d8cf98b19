ms4fleet_serving = {"max_model_len": 65536, "max_num_seqs": 32}
