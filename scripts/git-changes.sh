#!/bin/sh
# Change detection for the build plugin (its `detect_job`), as the operator
# runs it: `git-changes.sh REPO BRANCH SINCE`.
#
# Fetches REPO (a URL or a path) into a mirror of its own, then prints the
# files changed on BRANCH since commit SINCE, one per line, then
# `files <n>` (`files all` when SINCE is no longer in the repository, e.g.
# after a force push), then `head <commit> <author>`: the contract
# plugins/build/src/changes.rs reads. With SINCE empty it prints only the
# count 0 and the head. It only reads: give it no secrets.
#
#   [jobs.git-changes]
#   argv = ["scripts/git-changes.sh", "{repo}", "{branch}", "{since}"]
#   params = { repo = "[A-Za-z0-9@:/._~+-]{1,300}", branch = "[A-Za-z0-9._/-]{1,100}", since = "[0-9a-f]{0,64}" }
set -eu
repo=$1 branch=$2 since=${3:-}
cache=${IKKYU_GIT_CACHE:-${HOME:-/tmp}/.cache/ikkyu-git}
mkdir -p "$cache"
mirror=$cache/$(printf '%s' "$repo" | sha256sum | cut -c1-24).git
# Several detections of one repository may run at once (one per green
# commit asked about); they take turns on its mirror.
exec 9>"$mirror.lock"
flock 9
if [ -d "$mirror" ]; then
    git -C "$mirror" fetch --quiet --prune --force origin '+refs/heads/*:refs/heads/*'
else
    git clone --quiet --mirror "$repo" "$mirror"
fi
if ! head=$(git -C "$mirror" rev-parse --verify --quiet "refs/heads/$branch^{commit}"); then
    echo "no branch $branch in $repo"
    exit 2
fi
author=$(git -C "$mirror" log -1 --format=%an "$head")
if [ -z "$since" ]; then
    echo "files 0"
elif git -C "$mirror" cat-file -e "$since^{commit}" 2>/dev/null; then
    changed=$(git -C "$mirror" diff --name-only --no-renames "$since" "$head")
    if [ -n "$changed" ]; then
        printf '%s\n' "$changed"
        echo "files $(printf '%s\n' "$changed" | wc -l | tr -d ' ')"
    else
        echo "files 0"
    fi
else
    echo "files all"
fi
echo "head $head $author"
