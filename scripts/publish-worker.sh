#!/usr/bin/env bash
# Publishes the release cloud workers install at boot: builds the release binary with AWS
# support, then uploads it and the model files to releases/<boot.version>/ in the release
# bucket, with a manifest of their sha256 sums (`skyburst aws publish-worker`). The user-data
# the controller renders pins that version and those sums.
#
#   scripts/publish-worker.sh examples/configs/aws.toml
#
# Credentials and region come from the AWS SDK's default chain, as for every other command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

config=${1:?usage: scripts/publish-worker.sh CONFIG_FILE}
scripts/fetch-assets.sh
cargo build --release --locked --features aws
target/release/skyburst --config "$config" aws publish-worker --binary target/release/skyburst
