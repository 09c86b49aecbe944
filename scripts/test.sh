#!/usr/bin/env bash
# The whole test suite, set up from nothing: build the wheel, install it with the test extra
# (pytest, hypothesis, PyTorch CPU as the reference) into a clean virtual environment, and run
# the tests from outside the source tree so they exercise the installed package.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CNNEXT_TEST_VENV:-$repo/.venv-test}"
python="${PYTHON:-python3}"

# Full Fashion-MNIST for the end-to-end accuracy test (Debian package; needs root + apt).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
fi

rm -rf "$venv" "$repo/dist"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip wheel -q --no-deps -w "$repo/dist" "$repo"
wheel="$(ls "$repo"/dist/cnnext-*.whl)"
"$venv/bin/python" -m pip install -q "${wheel}[test]"
export CNNEXT_WHEEL="$wheel"   # tests/test_build.py inspects this wheel

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
cd "$workdir"
"$venv/bin/python" -c "import cnnext; cnnext.show_config()"
"$venv/bin/python" -m pytest -c "$repo/pyproject.toml" --rootdir "$repo" --import-mode=importlib \
    -p no:cacheprovider "$repo/tests" "$@"
