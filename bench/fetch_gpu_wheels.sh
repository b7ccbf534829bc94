#!/usr/bin/env bash
# Download, into .whl/ at the repository root, the Python 3.12 manylinux x86_64 wheels that the bare GPU
# machine lacks, for bench/gpu_check.sh (which installs them offline). Idempotent: a wheel already there
# is not downloaded again. Needs network (run it here, not on the GPU machine).
#
#   bench/fetch_gpu_wheels.sh            # then carry .whl with the device tool (it is git-ignored)
#
# The GPU image has torch, lightning, transformers (and so huggingface_hub, safetensors, regex, tqdm, PyYAML),
# torchmetrics, timm (and so torchvision), numpy, pytest, pillow, matplotlib and pandas. Versions are the ones
# installed on the development machine. Two groups:
#   .whl/*.whl        what the package and its test suite import: installed for every check;
#   .whl/wandb/*.whl  wandb and its dependency closure (protobuf, pydantic, opentelemetry, requests, httpx, ...):
#                     installed into a separate target and put on the path only for the W&B logger test, so
#                     that its newer copies of shared libraries (typing_extensions, httpx, idna, certifi, ...)
#                     cannot shadow the image's for the rest of the suite.
# omegaconf 2.4 vendors its ANTLR runtime (omegaconf.vendor.antlr4) and requires only PyYAML, so
# antlr4-python3-runtime is not needed. psutil is used only by bench/bench_image_reading.py: not carried.
set -euo pipefail
cd "$(dirname "$0")/.."

CORE=(
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.7.0
  jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0
  omegaconf==2.4.0
  faiss-cpu==1.15.1
  pytrec_eval-terrier==0.5.11 ir_measures==0.4.3
)
WANDB=(
  wandb==0.31.0 click==8.5.1 platformdirs==4.14.8 xxhash==4.1.0
  protobuf==7.36.2 googleapis-common-protos==1.76.0
  pydantic==2.13.4 pydantic_core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 typing_extensions==4.16.0
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
  opentelemetry-exporter-otlp-proto-http==1.45.2 opentelemetry-exporter-otlp-proto-common==1.45.2
  opentelemetry-semantic-conventions==0.66b2 opentelemetry-exporter-otlp-common==0.66b2
  opentelemetry-exporter-http-transport==0.66b2
  requests==2.34.2 urllib3==2.7.0 charset-normalizer==3.4.7 idna==3.20 certifi==2026.5.20
  cwevals==0.0.1b1 anyio==4.16.0 sniffio==1.3.1 distro==1.9.0 httpx==0.28.1 httpcore==1.0.9 h11==0.16.0
)
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

# pip's normalised project name: lower case, runs of -_. become one _ (as in wheel file names)
wheel_prefix() {
  local name=${1%%==*} version=${1##*==}
  name=$(tr 'A-Z' 'a-z' <<<"$name" | sed 's/[-_.]\+/_/g')
  echo "${name}-${version}-"
}

fetch() {  # fetch DIR SPEC...: download each SPEC unless a wheel of that name and version is already in DIR
  local dir=$1; shift
  mkdir -p "$dir"
  for spec in "$@"; do
    if compgen -G "$dir/$(wheel_prefix "$spec")*.whl" >/dev/null \
       || compgen -G "$dir/$(wheel_prefix "$spec" | tr '_' '-')*.whl" >/dev/null; then
      continue
    fi
    # (pip's warnings about configured local indexes that do not exist are dropped)
    python3 -m pip download -q --no-deps "${PLATFORM[@]}" -d "$dir" "$spec" \
      2> >(grep -v "is ignored: it is neither" >&2)
  done
}

fetch .whl "${CORE[@]}"
fetch .whl/wandb "${WANDB[@]}"

# never commit the wheels (the tracked .gitignore does not list them; see the report)
exclude=.git/info/exclude
if [ -d .git ]; then
  mkdir -p .git/info
  grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
fi

echo "wheels in .whl/ (core) and .whl/wandb/:"
ls -1 .whl/*.whl .whl/wandb/*.whl | sed 's#^#  #'
du -cb .whl/*.whl | tail -1 | awk '{printf "core  %.1f MiB\n", $1 / 1048576}'
du -cb .whl/wandb/*.whl | tail -1 | awk '{printf "wandb %.1f MiB\n", $1 / 1048576}'
du -cb .whl/*.whl .whl/wandb/*.whl | tail -1 | awk '{printf "total %.1f MiB (limit ~55 MiB)\n", $1 / 1048576}'
