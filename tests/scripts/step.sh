#!/bin/sh
# A job for tests: says what it does, appends it to $MARK (when set) so a
# test can read which steps ran and in which order, and exits with $2.
echo "step $1"
if [ -n "$MARK" ]; then echo "$1" >> "$MARK"; fi
exit "${2:-0}"
