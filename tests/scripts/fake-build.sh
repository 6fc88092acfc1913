#!/bin/sh
# A build job for transcripts: `fake-build.sh SERVICE` builds SERVICE, and
# fails like a compiler when it is $FAIL_SERVICE.
echo "building $1"
if [ "$1" = "${FAIL_SERVICE:-}" ]; then
    echo "error: $1 does not compile"
    exit 1
fi
echo "built $1"
