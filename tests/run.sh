#!/usr/bin/env bash
# The test command (README, and .ci/run calls it): everything a fresh clone
# needs is built or installed from here.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace
