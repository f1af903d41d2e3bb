"""Verifies logged deliveries (one JSON object a line: secret, headers, body) three ways:

- with the Standard Webhooks reference library (PyPI `standardwebhooks`);
- with the Python snippet of docs/EVENTS.md (standard library only), as an integrator copies it;
- with the Node.js snippet of docs/EVENTS.md, when `node` is installed.

Fails on the first delivery one of them refuses, or when there are none."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from standardwebhooks.webhooks import Webhook

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def snippet(language):
    """The code block of `language` that follows its heading line in docs/EVENTS.md."""
    doc = open(os.path.join(ROOT, "docs", "EVENTS.md")).read()
    heading = {"python": "Python:", "js": "Node.js:"}[language]
    found = re.search(re.escape(heading) + r"\s*```" + language + r"\n(.*?)```", doc, re.S)
    if not found:
        sys.exit(f"docs/EVENTS.md has no {language} snippet after `{heading}`")
    return found.group(1)


path = sys.argv[1]
deliveries = [json.loads(line) for line in open(path)]
if not deliveries:
    sys.exit("no delivery was logged: the events tests did not run or did not log")

documented = {}
exec(snippet("python"), documented)
types = set()
for n, d in enumerate(deliveries, 1):
    wid = d["headers"].get("webhook-id")
    try:
        payload = Webhook(d["secret"]).verify(d["body"], d["headers"])
    except Exception as e:  # the library's own verification errors
        sys.exit(f"delivery {n} ({wid}) does not verify with standardwebhooks: {e}")
    if payload["id"] != wid:
        sys.exit(f"delivery {n}: webhook-id {wid} is not the event's id {payload['id']}")
    try:
        documented["verify"](d["secret"], d["headers"], d["body"].encode())
    except Exception as e:
        sys.exit(f"delivery {n} ({wid}) does not verify with docs/EVENTS.md's Python snippet: {e}")
    types.add(payload["type"])
checked = "standardwebhooks and the documented Python snippet"

# Each verifier must also refuse: the first delivery with one byte of its body changed.
forged = dict(deliveries[0], body=deliveries[0]["body"].replace('"', "'", 1))
for name, check in [
    ("standardwebhooks", lambda d: Webhook(d["secret"]).verify(d["body"], d["headers"])),
    ("the documented Python snippet",
     lambda d: documented["verify"](d["secret"], d["headers"], d["body"].encode())),
]:
    try:
        check(forged)
    except Exception:
        continue
    sys.exit(f"{name} accepted a forged delivery: this check proves nothing")

if shutil.which("node"):
    with tempfile.TemporaryDirectory() as tmp:
        open(os.path.join(tmp, "verify.mjs"), "w").write(snippet("js"))
        open(os.path.join(tmp, "check.mjs"), "w").write(
            'import { readFileSync } from "node:fs";\n'
            'import { verify } from "./verify.mjs";\n'
            'const lines = readFileSync(process.argv[2], "utf8").split("\\n").filter(Boolean);\n'
            "lines.forEach((line, i) => {\n"
            "  const d = JSON.parse(line);\n"
            "  try { verify(d.secret, d.headers, d.body); }\n"
            '  catch (e) { console.error(`delivery ${i + 1}: ${e.message}`); process.exit(1); }\n'
            "});\n")
        check = ["node", os.path.join(tmp, "check.mjs")]
        result = subprocess.run(check + [os.path.abspath(path)], capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit("docs/EVENTS.md's Node.js snippet refused a delivery: " + result.stderr.strip())
        forged_path = os.path.join(tmp, "forged.jsonl")
        open(forged_path, "w").write(json.dumps(forged) + "\n")
        if subprocess.run(check + [forged_path], capture_output=True).returncode == 0:
            sys.exit("docs/EVENTS.md's Node.js snippet accepted a forged delivery")
    checked += " and the documented Node.js snippet"

print(f"verify-deliveries: {len(deliveries)} deliveries of {len(types)} types verified with "
      f"{checked} ({', '.join(sorted(types))})")
