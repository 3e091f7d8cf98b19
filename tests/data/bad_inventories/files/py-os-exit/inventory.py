import os
print("partial output")
os._exit(0)
