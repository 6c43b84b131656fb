#!/usr/bin/env bash
# Builds (and with --push, pushes) the node images: REGISTRY/stowage-{cpu,gpu,inf}:TAG.
#   scripts/build.sh --registry REGISTRY [--tag TAG] [--families cpu,gpu,inf] [--push]
# For an ECR registry (ACCOUNT.dkr.ecr.REGION.amazonaws.com) it logs in with the AWS CLI first.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$root"
registry=""
tag=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
families=cpu,gpu,inf
push=false
while (($#)); do
  case "$1" in
    --registry) registry=${2%/}; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --families) families=$2; shift 2 ;;
    --push) push=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) refuse "unknown argument $1" ;;
  esac
done
[ -n "$registry" ] || refuse "--registry is required"
if $push && [[ $registry =~ ^[0-9]+\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com ]]; then
  aws ecr get-login-password --region "${BASH_REMATCH[1]}" | docker login --username AWS --password-stdin "$registry"
fi
for family in ${families//,/ }; do
  image="$registry/stowage-$family:$tag"
  docker build -f "docker/Dockerfile.$family" -t "$image" .
  if $push; then docker push "$image"; fi
  echo "built $image"
done
