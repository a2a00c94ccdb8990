#!/bin/sh
# Print docker/.env.example with every `generate` replaced by a fresh random secret (32 random bytes,
# 64 hex digits: what HS512 signing wants) and the Fernet key in its format (32 bytes, URL-safe base64):
#   docker/new-env.sh > docker/.env
set -eu
example="$(dirname "$0")/.env.example"
while IFS= read -r line; do
  case "$line" in
    *=generate)        echo "${line%=generate}=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" ;;
    *=generate-fernet) echo "${line%=generate-fernet}=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_')" ;;
    *)                 echo "$line" ;;
  esac
done < "$example"
