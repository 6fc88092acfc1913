#!/bin/sh
# The demo deploy job of ikkyu.toml: pretends to deploy one host of a
# service (or its static files) in about a second. Replace it with the
# real thing; ikkyu passes each parameter as its own argument, no shell.
phase="$1"; service="$2"; version="$3"; host="${4:-}"
echo "deploying $service $version ($phase) ${host:+to $host}"
sleep 1
echo "ok"
