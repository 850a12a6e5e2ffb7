#!/usr/bin/env bash
# Browser tests of the transmamba-web package and the demo (run web/build.sh first).
set -euo pipefail
cd "$(dirname "$0")/test"
npm ci --silent --no-audit --no-fund
node --test --test-concurrency=1 browser.test.mjs bundlers.test.mjs
