#!/usr/bin/env bash
# The GPU check, prepared for a machine with a CUDA GPU: at most 290 s of steps (each has
# its own limit) plus installing the wheels.
#
#   bash benchmarks/gpu_check.sh download WHEELS    # where PyPI is reachable: fetch wheels
#   bash benchmarks/gpu_check.sh run WHEELS [OUT]   # on the GPU machine, offline
#
# `run` installs from WHEELS (no network: pip --no-index) whatever searchkd needs that the
# machine's Python lacks, into a private folder on PYTHONPATH, then runs, each under its own
# time limit:
#   1. the CUDA-marked tests (every loss on the GPU; a search and every retraining schedule
#      with --device cuda; the torch-cuda latency meter; two Ray trials sharing one GPU);
#   2. a tiny `searchkd search --device cuda` on digits, then `pareto` and `export`;
#   3. the same search on Ray with --gpus-per-trial 0.5 (two trials per GPU);
#   4. benchmarks/gpu_throughput.py: proxy samples/s on cuda vs cpu, default task and students;
# and prints a table of the steps. Logs go to OUT (default: a temporary folder).
#
# Written for the lent machines of this project (Python 3.12, torch 2.11 + CUDA, no
# internet; scikit-learn, scipy, pandas, onnx, onnxruntime, pyyaml, tqdm preinstalled). What
# they lack is listed in NEEDED (and RAY for step 3); pins are the versions tested on the CPU.
# Ray's wheel is 79 MB, over the 64 MiB a device call carries, so `download` strips what
# searchkd never imports (Ray's Java jars, RLlib, Serve, its LLM library: `strip_ray`), which
# leaves 42 MB; where Ray still cannot be brought, the Ray steps are skipped, saying so.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# module to import = pip requirement
NEEDED=(
    optuna=optuna==5.0.0 alembic=alembic==1.20.1 mako=Mako==1.4.3
    sqlalchemy=SQLAlchemy==2.1.9 colorlog=colorlog==6.12.0
    pydantic=pydantic==2.14.4 pydantic_core=pydantic-core==2.50.5
    annotated_types=annotated-types==0.8.0 typing_inspection=typing-inspection==0.4.5
    typing_extensions=typing-extensions==4.16.0
    fvcore=fvcore==0.1.5.post20221221 iopath=iopath==0.1.10 yacs=yacs==0.1.8
    termcolor=termcolor==3.3.0 portalocker=portalocker==4.4.2 tabulate=tabulate==0.10.0
    mlxtend=mlxtend==0.25.0
)
RAY=(
    ray=ray==2.60.0 jsonschema=jsonschema==4.26.0
    jsonschema_specifications=jsonschema-specifications==2025.9.1
    referencing=referencing==0.37.0 rpds=rpds-py==2026.9.1 tensorboardX=tensorboardX==2.6.5
)
SDIST_ONLY="fvcore iopath"  # no wheels on PyPI: built here (pure Python, any platform)
RAY_UNUSED="ray/jars/ ray/rllib/ ray/serve/ ray/llm/"  # what strip_ray drops from Ray's wheel

usage() {
    echo "usage: $0 download WHEELS | run WHEELS [OUT] | strip-ray WHEEL" >&2
    exit 2
}

download() {
    local dir=$1
    mkdir -p "$dir"
    local spec name
    for spec in "${NEEDED[@]}" "${RAY[@]}"; do
        name=${spec%%=*}
        spec=${spec#*=}
        if [[ " $SDIST_ONLY " == *" $name "* ]]; then
            $PY -m pip wheel -q --no-deps -w "$dir" "$spec" || echo "could not build $spec"
        else
            $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
                --implementation cp --platform manylinux_2_28_x86_64 \
                --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
                --platform manylinux1_x86_64 -d "$dir" "$spec" || echo "could not fetch $spec"
        fi
    done
    local wheel
    for wheel in "$dir"/ray-*.whl; do
        [ -e "$wheel" ] && strip_ray "$wheel"
    done
    du -sh "$dir"
    ls -S "$dir" | head -3 | sed 's/^/largest: /'
}

strip_ray() {  # rewrite Ray's wheel without RAY_UNUSED, its RECORD to match (a valid wheel)
    $PY - "$1" $RAY_UNUSED <<'PYTHON'
import os, sys, zipfile
path, drop = sys.argv[1], tuple(sys.argv[2:])
with zipfile.ZipFile(path) as source:
    kept = [i for i in source.infolist() if not i.filename.startswith(drop)]
    if len(kept) == len(source.infolist()):
        sys.exit(0)  # stripped already
    with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as target:
        for info in kept:
            data = source.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if not line.startswith(drop)).encode()
            target.writestr(info, data)
os.replace(path + ".tmp", path)
print(f"stripped {os.path.basename(path)} of {' '.join(drop)}: {os.path.getsize(path) >> 20} MB")
PYTHON
}

missing_of() {  # the requirements, of those given, whose module does not import here
    local spec
    for spec in "$@"; do
        $PY -c "import ${spec%%=*}" 2>/dev/null || echo "${spec#*=}"
    done
}

wheels_for() {  # the wheels in $1 for the requirements NAME==VERSION that follow
    local dir=$1 spec name file
    shift
    for spec in "$@"; do
        name=$(echo "${spec%%==*}" | tr 'A-Z-' 'a-z_')  # as wheel file names spell it
        for file in "$dir"/*.whl; do
            case $(basename "$file" | tr 'A-Z' 'a-z') in
            "$name-${spec#*==}-"*) echo "$file" ;;
            esac
        done
    done
}

install() {  # what is missing, from the wheels in $1, into the folder $2
    local dir=$1 site=$2 missing wheels
    missing=$(missing_of "${NEEDED[@]}" "${RAY[@]}" | tr '\n' ' ')
    echo "missing here: ${missing:-nothing}"
    # only the missing ones, --no-deps: what the machine already has stays as it is (a
    # wheel installed for a package it has would shadow it on PYTHONPATH)
    # shellcheck disable=SC2086  # one requirement per word
    mapfile -t wheels < <(wheels_for "$dir" $missing)
    if [ "${#wheels[@]}" -gt 0 ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target "$site" "${wheels[@]}" || return 1
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    missing=$(missing_of "${NEEDED[@]}" | tr '\n' ' ')
    if [ -n "$missing" ]; then
        echo "still missing: $missing; put their wheels in '$dir' (\`$0 download $dir\`" \
            "where PyPI is reachable)"
        return 1
    fi
    missing=$(missing_of "${RAY[@]}" | tr '\n' ' ')
    if [ -n "$missing" ]; then
        echo "the Ray steps will be skipped; missing: $missing"
        HAVE_RAY=0
    fi
    return 0
}

STEPS=()
HAVE_RAY=1
step() {  # name, seconds allowed, command...
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS code
    echo "=== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    code=$?
    tail -n 25 "$LOGS/$name.log"
    STEPS+=("| $name | $code | $((SECONDS - started))s |")
}

run() {
    local dir=$1
    LOGS=${2:-$(mktemp -d)}
    mkdir -p "$LOGS"
    export PYTHONUNBUFFERED=1
    if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "PyTorch sees no CUDA device here; this check is for a machine with one"
        exit 1
    fi
    $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
    local work
    work=$(mktemp -d)
    install "$dir" "$work/site" || exit 1

    cat >"$work/tiny.yaml" <<'YAML'
dataset: digits
space: resnet
trials: 3
teacher: {arch: resnet20, epochs: 2, batch_size: 64}
budget: {max_macs: 2M}
proxy: {epochs: 2, batch_size: 64}
latency: {warmup: 1, runs: 3, repeats: 1}
YAML
    local cli=("$PY" -m searchkd.cli)
    step cuda-tests 120 "$PY" -m pytest -q -rs -p no:cacheprovider \
        "tests/test_device.py::test_every_loss_trains_the_proxy_on_the_device[cuda]" \
        "tests/test_device.py::test_a_search_and_every_retraining_schedule_run_on_the_device[cuda]" \
        tests/test_cost.py::test_cuda_meter \
        tests/test_ray_runner.py::test_two_trials_share_a_gpu_and_record_it
    step search-cuda 45 bash -c "${cli[*]} search --config $work/tiny.yaml --device cuda \
        --run-dir $work/runs --study local-cuda --no-progress \
        && ${cli[*]} pareto --run-dir $work/runs --study local-cuda \
        && ${cli[*]} export --run-dir $work/runs --study local-cuda --out $work/exports"
    if [ "$HAVE_RAY" = 1 ]; then
        step search-ray-gpu 60 "${cli[@]}" search --config "$work/tiny.yaml" --runner ray \
        --workers 2 --cpus-per-trial 1 --gpus-per-trial 0.5 --run-dir "$work/runs" \
        --study ray-gpu --no-progress
    else
        STEPS+=("| search-ray-gpu | skipped: ray not importable | - |")
    fi
    step devices-recorded 20 "$PY" -c "
from searchkd.study import default_storage, load_existing_study, trained_trials
for name in ('local-cuda', 'ray-gpu')[: 1 + $HAVE_RAY]:
    study = load_existing_study(name, default_storage('$work/runs'))
    devices = [t.user_attrs.get('train_device') for t in trained_trials(study)]
    print(name, len(devices), 'trained trials on', sorted(set(map(str, devices))))
    assert devices and all(str(d).startswith('cuda:') for d in devices), devices
"
    step throughput 45 "$PY" benchmarks/gpu_throughput.py --epochs 2 --repeats 2

    echo
    echo "| step | exit | time |"
    echo "|---|---|---|"
    printf '%s\n' "${STEPS[@]}"
    echo "logs: $LOGS"
    grep -h "^|" "$LOGS/throughput.log" 2>/dev/null
    grep -h "cuda / cpu" "$LOGS/throughput.log" 2>/dev/null
}

case "${1:-}" in
download) [ $# -eq 2 ] || usage; download "$2" ;;
run) [ $# -ge 2 ] || usage; run "$2" "${3:-}" ;;
strip-ray) [ $# -eq 2 ] || usage; strip_ray "$2" ;;
*) usage ;;
esac
