#!/bin/sh
# A deploy job for tests: $1 phase, $2 host, $3 version. Says what it
# does, appends "$1 $2" to $MARK (when set) so a test reads which hosts
# were touched in which order, waits $SLEEP seconds (when set), and fails
# for the host named in $FAIL_HOST.
echo "$1 $2 $3"
if [ -n "$MARK" ]; then echo "$1 $2" >> "$MARK"; fi
if [ -n "$SLEEP" ]; then sleep "$SLEEP"; fi
if [ -n "$FAIL_HOST" ] && [ "$2" = "$FAIL_HOST" ]; then
    echo "cannot reach $2: disk full" >&2
    exit 2
fi
exit 0
