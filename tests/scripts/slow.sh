#!/bin/sh
# A job for tests that takes $1 seconds; appends "start <name>" and
# "end <name>" to $MARK (when set), so a test can see overlap and whether
# it was stopped before its end.
name="${2:-slow}"
if [ -n "$MARK" ]; then echo "start $name" >> "$MARK"; fi
echo "working on $name"
sleep "$1"
if [ -n "$MARK" ]; then echo "end $name" >> "$MARK"; fi
echo "done with $name"
