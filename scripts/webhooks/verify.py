"""Verifies logged deliveries (one JSON object a line: secret, headers, body) with the Standard
Webhooks reference library; fails on the first that does not verify, or when there are none."""
import json
import sys

from standardwebhooks.webhooks import Webhook

path = sys.argv[1]
count = 0
types = set()
with open(path) as f:
    for n, line in enumerate(f, 1):
        d = json.loads(line)
        try:
            payload = Webhook(d["secret"]).verify(d["body"], d["headers"])
        except Exception as e:  # the library's own verification errors
            sys.exit(f"delivery {n} ({d['headers'].get('webhook-id')}) does not verify: {e}")
        if payload["id"] != d["headers"]["webhook-id"]:
            sys.exit(f"delivery {n}: webhook-id {d['headers']['webhook-id']} is not the event's id {payload['id']}")
        types.add(payload["type"])
        count += 1
if count == 0:
    sys.exit("no delivery was logged: the events tests did not run or did not log")
print(f"verify-deliveries: {count} deliveries of {len(types)} types verified "
      f"({', '.join(sorted(types))})")
