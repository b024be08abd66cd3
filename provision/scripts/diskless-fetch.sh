#!/bin/sh
# diskless-fetch ROOT_URL IDENTITY_URL DIR: what a diskless node fetches from the install server, in this order
# -- ROOT_URL.sha256 (the digest the server publishes), ROOT_URL (the squashfs, verified against it), then
# IDENTITY_URL (the node's identity script) -- into DIR/root.squashfs and DIR/identity. Anything missing or a
# wrong digest: says so on the console, removes what it fetched, and tries again every $PROVISION_RETRY_SECONDS
# (10) seconds, forever or $PROVISION_TRIES times (then exit 1). Exit 0: both there, the digest matched.
root_url=$1 identity_url=$2 dir=$3
retry=${PROVISION_RETRY_SECONDS:-10}
tries=${PROVISION_TRIES:-0}
say() { echo "provision-diskless: $*"; }
clean() { rm -f "$dir/root.squashfs.sha256" "$dir/root.squashfs" "$dir/identity"; }
try=0
while :; do
  try=$((try + 1))
  clean
  if ! wget -q -O "$dir/root.squashfs.sha256" "$root_url.sha256"; then
    problem="no image: cannot fetch $root_url.sha256"
  elif ! expected=$(cut -d' ' -f1 "$dir/root.squashfs.sha256") || ! echo "$expected" | grep -qE '^[0-9a-f]{64}$'; then
    problem="$root_url.sha256 holds no sha256"
  elif ! wget -q -O "$dir/root.squashfs" "$root_url"; then
    problem="cannot fetch $root_url"
  elif actual=$(sha256sum "$dir/root.squashfs" | cut -d' ' -f1) && [ "$actual" != "$expected" ]; then
    problem="image refused: $root_url has sha256 $actual, the server publishes $expected"
  elif ! wget -q -O "$dir/identity" "$identity_url"; then
    problem="cannot fetch the identity $identity_url"
  else
    say "image verified (sha256 $expected, $(wc -c < "$dir/root.squashfs") bytes); identity fetched"
    exit 0
  fi
  clean
  say "$problem"
  if [ "$tries" -gt 0 ] && [ "$try" -ge "$tries" ]; then
    say "giving up after $try tries"
    exit 1
  fi
  say "trying again in $retry s"
  sleep "$retry"
done
