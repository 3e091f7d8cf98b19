ms4fleet_serving = {"max_num_seqs": 8}
