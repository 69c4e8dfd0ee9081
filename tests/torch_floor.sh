#!/usr/bin/env bash
# The torch floor: run the library's own tests (not the examples' or the detector's) on each given torch
# version, each in a fresh virtual environment, and print one plain summary line per version.
#
#   bash tests/torch_floor.sh 2.4.0 2.3.0 ...        # PYTHON=python3.10 to use another interpreter
#
# The venvs go under $TORCH_FLOOR_DIR (default: a temporary folder) and are deleted after each version
# unless TORCH_FLOOR_KEEP=1 (then a rerun reuses them). PyPI's Linux torch wheels pull the CUDA
# packages (several GB per version), so pip runs without a cache; check `df -h` first. torch < 2.3 was
# built against numpy 1, so those versions get numpy < 2. What is tested is the committed HEAD, exported
# with `git archive` (TORCH_FLOOR_TREE=worktree tests the working tree as it is), used from that folder
# (PYTHONPATH), not installed, so pyproject's own torch floor does not decide what is tried.
# The docs record the output: docs/conventions.md, "Torch versions".
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DIR=${TORCH_FLOOR_DIR:-$(mktemp -d)}
mkdir -p "$DIR"
if [ "${TORCH_FLOOR_TREE:-head}" = worktree ]; then
    ROOT=$(pwd)
    what="working tree at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- dmf_fusion tests || echo ' with changes')"
else
    ROOT="$DIR/src-$(git rev-parse --short HEAD)"
    rm -rf "$ROOT" && mkdir -p "$ROOT" && git archive HEAD dmf_fusion tests pyproject.toml | tar -x -C "$ROOT"
    what="commit $(git rev-parse --short HEAD)"
fi
TESTS=(tests/test_fusion.py tests/test_functional.py tests/test_dmf_forms.py tests/test_compat.py
       tests/test_blocked_attention.py tests/test_validation.py)

if [ $# -eq 0 ]; then
    echo "usage: bash tests/torch_floor.sh VERSION..." >&2
    exit 2
fi

echo "torch floor: $what, $("$PYTHON" --version 2>&1), $(uname -m), tests: ${TESTS[*]}"
status=0
for version in "$@"; do
    venv="$DIR/torch-$version"
    log="$DIR/torch-$version.log"
    numpy="numpy>=1.24"
    if [ "$(printf '%s\n' "$version" 2.3 | sort -V | head -n1)" != 2.3 ]; then
        numpy="numpy>=1.24,<2"
    fi
    if [ ! -x "$venv/bin/python" ]; then
        "$PYTHON" -m venv "$venv"
        if ! "$venv/bin/pip" install --quiet --no-cache-dir "torch==$version" "$numpy" "einops>=0.7" \
            "pytest>=7.4" "hypothesis>=6.90" >"$log" 2>&1; then
            echo "torch $version: NOT INSTALLED ($(tail -n1 "$log"))"
            status=1
            [ "${TORCH_FLOOR_KEEP:-0}" = 1 ] || rm -rf "$venv"
            continue
        fi
    fi
    got=$("$venv/bin/python" -c "import torch, numpy; print(torch.__version__, 'numpy', numpy.__version__)" 2>&1 | tail -n1)
    (cd "$ROOT" && CI=1 PYTHONPATH="$ROOT" "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}") >>"$log" 2>&1
    rc=$?
    summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|^(=+ )?.*(passed|failed|error).* in [0-9.]+s' "$log" | tail -n1 | tr -d '=')
    if [ $rc -eq 0 ]; then
        echo "torch $version: PASS ($got;${summary})"
    else
        echo "torch $version: FAIL ($got;${summary}); log: $log"
        grep -E '^(FAILED|ERROR) ' "$log" | head -n 20 | sed 's/^/    /'
        status=1
    fi
    [ "${TORCH_FLOOR_KEEP:-0}" = 1 ] || rm -rf "$venv"
done
exit $status
