_helpers = ["not", "a", "group"]
