#!/bin/sh
# A change detection for transcripts, in the contract of
# scripts/git-changes.sh without git: `fake-changes.sh REPO BRANCH SINCE`
# prints $CHANGED (space-separated) as the files changed since SINCE
# (none when SINCE is empty), their count, and `head $HEAD $AUTHOR`.
set -eu
since=${3:-}
n=0
if [ -n "$since" ]; then
    for f in $CHANGED; do echo "$f"; n=$((n + 1)); done
fi
echo "files $n"
echo "head $HEAD $AUTHOR"
