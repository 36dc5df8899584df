#!/usr/bin/env bash
rm -rf /tmp/ci && mkdir -p /tmp/ci && cd /tmp/ci
git clone -q /work/main main && cp -r /work/shared /tmp/ci/shared
cd main && start=$(date +%s)
bash .ci/run > /tmp/ci/run.log 2>&1
echo "rc=$? seconds=$(( $(date +%s) - start ))" >> /tmp/ci/run.log
