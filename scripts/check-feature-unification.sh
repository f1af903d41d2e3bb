#!/usr/bin/env bash
# Fails when a crate is built with other features for the service (`cargo run`, `cargo build`)
# than for the tests (`cargo test`, where the dev-dependencies' features are added). A difference
# makes `cargo run` after `cargo test` recompile the crate and everything above it (tokio, hyper,
# actix: most of the build). The fix is a line in Cargo.toml's "not used by name" block that turns
# the same features on for the service. CI runs this before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

target="$(rustc -vV | sed -n 's/^host: //p')"
tree() {
  cargo tree --locked -e "$1" -f '{p} [{f}]' --prefix none --target "$target" | sed 's/ (\*)$//' | sort -u
}
service="$(mktemp)"
tests="$(mktemp)"
trap 'rm -f "$service" "$tests"' EXIT
tree normal,build >"$service"
tree normal,build,dev >"$tests"

python3 - "$service" "$tests" <<'PY'
import sys

def features(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if line:
            out[line.split(" [")[0]] = line
    return out

service, tests = features(sys.argv[1]), features(sys.argv[2])
differ = sorted(k for k in service if k in tests and service[k] != tests[k])
for k in differ:
    print(f"feature-unification: {k}: service {service[k][len(k):]} tests {tests[k][len(k):]}")
if differ:
    print(f"feature-unification: {len(differ)} crate(s) differ; add the tests' features to Cargo.toml's "
          "'not used by name' block", file=sys.stderr)
    sys.exit(1)
print(f"feature-unification: {len(service)} crates, the same features for the service and the tests")
PY
