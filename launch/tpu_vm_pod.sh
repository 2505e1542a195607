#!/usr/bin/env bash
# Trains a jaxl2i config on every host of a Cloud TPU VM (single host or pod
# slice). Each host runs the same command; jax.distributed.initialize() finds
# the other hosts from the TPU environment, each host reads its own shard of
# the data, process 0 writes summaries, and every host joins the checkpoints.
#
# Usage:
#   JAXL2I_REPO=<git url> launch/tpu_vm_pod.sh setup TPU_NAME ZONE   # clone + install on all hosts
#   launch/tpu_vm_pod.sh train TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
#
# WORKDIR must be storage every host sees (a gs:// bucket); the TFDS data dir
# too (--config.data.data_dir=gs://...). Preemption (SIGTERM) saves a
# checkpoint; rerunning the same command resumes.
set -euo pipefail
cmd=${1:?setup|train}; tpu=${2:?TPU name}; zone=${3:?zone}; shift 3

ssh_all() {
  gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all \
    --command "$1"
}

case "$cmd" in
  setup)
    repo=${JAXL2I_REPO:?set JAXL2I_REPO to the git URL of your jaxl2i repository}
    ssh_all "set -e; test -d ~/jaxl2i || git clone -q $repo ~/jaxl2i; \
      cd ~/jaxl2i && git pull -q && python3 -m venv .venv && \
      .venv/bin/pip install -q -U pip && \
      .venv/bin/pip install -q -e . 'jax[tpu]'"
    ;;
  train)
    config=${1:?config}; workdir=${2:?workdir}; shift 2
    ssh_all "cd ~/jaxl2i && .venv/bin/python -m jaxl2i.main \
      --config=$config --workdir=$workdir $*"
    ;;
  *) echo "unknown command $cmd (setup|train)" >&2; exit 2 ;;
esac
