#!/usr/bin/env bash
# Run part of the test suite against kernels built with AddressSanitizer; fail on any ASan report.
#
# Copies the repository to a temporary directory (the checkout's own build is left alone), builds
# the extensions there in place with CNNEXT_SANITIZE=address (see setup.py), then runs the op
# fuzzer, the concurrency tests, the buffer-aliasing test and the optimizer-update tests with
# libasan preloaded into Python, and checks that a deliberate overflow is reported. Leak detection
# is off: CPython keeps objects alive until exit by design. Takes about 4 minutes on 2 cores (half
# of it building).
#
# Usage: bash scripts/asan.sh [pytest arguments replacing the default test selection]
# Needs: gcc with libasan, Cython >= 3, setuptools, numpy, pytest, hypothesis.
# Environment: PYTHON (default python3), CNNEXT_ASAN_KEEP=1 keeps the temporary directory.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/cnnext-asan.XXXXXX")"
if [ "${CNNEXT_ASAN_KEEP:-0}" != 1 ]; then
    trap 'rm -rf "$work"' EXIT
fi

libasan="$(gcc -print-file-name=libasan.so)"
if [ ! -e "$libasan" ]; then
    echo "asan.sh: gcc has no libasan.so (install libasan for your gcc)" >&2
    exit 2
fi

cp -r "$repo/setup.py" "$repo/pyproject.toml" "$repo/src" "$repo/cnnext" "$repo/tests" "$work/"
# Never reuse the checkout's build: remove compiled modules and generated C, then rebuild.
find "$work" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
for pyx in "$work"/src/*.pyx; do rm -f "${pyx%.pyx}.c"; done

echo "asan.sh: building with AddressSanitizer in $work" >&2
(cd "$work" && CNNEXT_SANITIZE=address "$python" setup.py -q build_ext --inplace) \
    > "$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; exit 1; }

if [ "$#" -eq 0 ]; then
    set -- tests/test_fuzz_ops.py tests/test_reliability_concurrency.py \
        "tests/test_reliability_resources.py::test_results_do_not_alias_reused_buffers" \
        "tests/test_optimizers.py::test_compiled_updates_equal_the_twin_bit_for_bit" \
        "tests/test_ops_twin.py::test_softmax_cross_entropy_matches_numpy" \
        "tests/test_ops_twin.py::test_small_channel_conv_of_any_batch_size_matches_numpy" \
        "tests/test_ops_twin.py::test_conv2d_relu_is_relu_of_conv2d_bit_for_bit" \
        "tests/test_ops_twin.py::test_channel_lane_forward_matches_numpy_at_every_simd_level" \
        "tests/test_ops_twin.py::test_every_weight_gradient_driver_matches_numpy" \
        "tests/test_ops_twin.py::test_sliding_input_gradient_matches_numpy_and_the_row_gathering_kernel" \
        "tests/test_ops_twin.py::test_sliding_input_gradient_of_random_shapes_matches_numpy" \
        "tests/test_ops_twin.py::test_dense_input_gradient_reads_the_whole_new_transposed_kernel" \
        tests/test_conv_expanded.py
fi
mkdir -p "$work/asan-logs"
status=0
(
    cd "$work"
    export PYTHONPATH="$work" CNNEXT_BACKEND=cython
    export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$work/asan-logs/asan"
    LD_PRELOAD="$libasan" "$python" -m pytest -q -p no:cacheprovider --import-mode=importlib \
        -c "$work/pyproject.toml" --rootdir "$work" "$@"
    # The tests must have imported the sanitized build, not an installed cnnext.
    LD_PRELOAD="$libasan" "$python" -c "import cnnext._ext._conv2d as m, sys; \
        sys.exit(0 if m.__file__.startswith('$work') else 'asan.sh: wrong cnnext: ' + m.__file__)"
) || status=$?

# Self-check, so that a clean run means something: every module is instrumented, and a real
# heap overflow (a memcpy past a numpy buffer) is reported through the same options.
for so in "$work"/cnnext/_ext/*.so; do
    # grep without -q reads all of nm's output: no SIGPIPE failing the pipeline
    if ! nm -D "$so" | grep __asan_init > /dev/null; then
        echo "asan.sh: $so is not instrumented" >&2
        exit 1
    fi
done
mkdir -p "$work/canary"
ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$work/canary/asan" LD_PRELOAD="$libasan" \
    "$python" -c "import ctypes, numpy as np; a = np.ones(16, np.uint8); \
    ctypes.string_at(a.ctypes.data, 4096)" 2> /dev/null || true
if ! grep -qs "heap-buffer-overflow" "$work"/canary/asan*; then
    echo "asan.sh: self-check failed: AddressSanitizer did not report a deliberate overflow" >&2
    exit 1
fi

if compgen -G "$work/asan-logs/asan*" > /dev/null; then
    echo "asan.sh: AddressSanitizer reported errors:" >&2
    cat "$work"/asan-logs/asan* >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "asan.sh: tests failed under AddressSanitizer (exit status $status)" >&2
    exit "$status"
fi
echo "asan.sh: no AddressSanitizer reports" >&2
