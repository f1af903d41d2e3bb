#!/usr/bin/env bash
# Typed-client check: the committed OpenAPI document generates TypeScript types
# (openapi-typescript) that a small openapi-fetch client (clients/typescript/src/client.ts)
# type-checks against. A change to the document that breaks that client fails here.
#
#   bash scripts/typescript-client.sh      # needs Node.js 20+ and npm; installs from package-lock.json
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="clients/typescript"

echo "== npm ci in $DIR"
(cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

echo "== generating $DIR/src/schema.d.ts from openapi/openapi.json"
(cd "$DIR" && npx --no-install openapi-typescript ../../openapi/openapi.json --output src/schema.d.ts)

echo "== type-checking $DIR"
(cd "$DIR" && npx --no-install tsc --noEmit -p .)
echo "== the typed client type-checks"
