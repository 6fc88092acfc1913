#!/bin/sh
# A build job for tests: `build-service.sh SERVICE REPO COMMIT ENV` builds
# SERVICE of the git repository REPO at COMMIT. It appends
# "ENV SERVICE COMMIT" to $MARK (when set) so a test reads which builds ran,
# waits $SLEEP seconds (for tests of overlapping builds), and fails like a
# compiler when the commit has a file SERVICE/FAIL, printing what it says.
set -eu
service=$1 repo=$2 commit=$3 env=$4
if [ -n "${MARK:-}" ]; then echo "$env $service $commit" >> "$MARK"; fi
sleep "${SLEEP:-0}"
echo "building $service at $commit"
if git -C "$repo" cat-file -e "$commit:$service/FAIL" 2>/dev/null; then
    echo "error[E0308]: $service does not compile: $(git -C "$repo" show "$commit:$service/FAIL")"
    exit 1
fi
echo "built $service"
