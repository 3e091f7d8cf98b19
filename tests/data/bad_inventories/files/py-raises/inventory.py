import json
hosts = json.loads(open("/nonexistent/cmdb.json").read())
