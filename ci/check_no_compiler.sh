#!/usr/bin/env bash
# The no-compiler proof (issue 12, part 1): install klest where no C compiler exists, then run
# `make demo`'s job (`klest demo`) and the engine tests on the pure-NumPy engine.
#
#   ci/check_no_compiler.sh [extra pytest arguments]
#
# 1. copies the source tree (no .so, no build/, no venvs: nothing prebuilt can leak in) and
#    creates a fresh venv;
# 2. hides every C compiler: PATH becomes the venv's bin plus a directory of links to every
#    tool on the original PATH except gcc, cc, c++, clang, ... (checked: `command -v gcc cc`
#    must find nothing), and CC=CXX=/bin/false;
# 3. `pip install <copy>` (not editable: the build really runs, and must warn once and go on),
#    then checks that no compiled library was installed and klest.native.BACKEND == "numpy";
# 4. runs `klest demo` (the rows of README's table must come out the same) and the engine
#    tests with KLEST_NATIVE=0.
# Not part of `make test` (it installs a venv and runs the full demo: several minutes).
# Needs python3 (3.11+) and the package index pip is configured with; KEEP=1 keeps the
# temporary directory.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/klest-nocc.XXXXXX")
[[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
step() { printf '\n== [%4ds] %s\n' $((SECONDS - START)) "$*"; }

step "copy the source tree to $WORK/src"
mkdir "$WORK/src"
tar -C "$ROOT" -cf - \
    --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude='*.egg-info' \
    --exclude='*.so' --exclude='*.pyd' --exclude=__pycache__ --exclude=./results \
    --exclude=./.hypothesis --exclude=./.pytest_cache --exclude=./.ruff_cache \
    --exclude=./.import_linter_cache . | tar -C "$WORK/src" -xf -

step "fresh venv"
"$PYTHON" -m venv "$WORK/venv"
VENV="$WORK/venv"

step "a PATH without C compilers"
SHADOW="$WORK/bin"
mkdir "$SHADOW"
COMPILER='^((gcc|cc|c89|c99|c\+\+|g\+\+|cpp|clang|clang\+\+|clang-cl|tcc|icc|icx|cl)(-[0-9.]+)?|.*-(gcc|g\+\+|cc|c\+\+|clang)(-[0-9.]+)?)$'
IFS=: read -r -a DIRS <<< "$PATH"
for dir in "${DIRS[@]}"; do
    [[ -d "$dir" ]] || continue
    for tool in "$dir"/*; do
        name=${tool##*/}
        [[ -x "$tool" && ! -e "$SHADOW/$name" ]] || continue
        [[ "$name" =~ $COMPILER ]] && continue
        ln -s "$tool" "$SHADOW/$name"
    done
done
export PATH="$VENV/bin:$SHADOW" CC=/bin/false CXX=/bin/false
unset KLEST_NATIVE KLEST_REQUIRE_NATIVE
if found=$(command -v gcc cc c++ clang); then
    echo "FAIL: a compiler is still on PATH: $found" >&2
    exit 1
fi
echo "command -v gcc cc c++ clang: nothing; CC=$CC"

step "pip install (not editable) from the copy, with no compiler"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install -v --no-cache-dir "$WORK/src" > "$WORK/pip.log" 2>&1 || {
    tail -40 "$WORK/pip.log" >&2
    echo "FAIL: pip install failed without a compiler" >&2
    exit 1
}
warnings=$(grep -c "klest: the compiled kernels could not be built" "$WORK/pip.log" || true)
grep "klest: the compiled kernels could not be built" "$WORK/pip.log" | sed 's/^ *//'
if [[ "$warnings" != 1 ]]; then
    echo "FAIL: expected the build warning once, found it $warnings times" >&2
    exit 1
fi

step "the installed klest has no compiled library and runs on NumPy"
cd "$WORK"  # not the source tree: import the installed klest
"$VENV/bin/python" - <<'EOF'
import pathlib
import warnings

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import klest
    import klest.native

package = pathlib.Path(klest.__file__).parent
libraries = sorted(str(p) for p in package.rglob("_kernels*") if p.suffix in (".so", ".pyd"))
assert "site-packages" in str(package), package
assert not libraries, libraries
assert klest.native.BACKEND == "numpy", klest.native.BACKEND
fallback = [w for w in caught if issubclass(w.category, klest.native.FallbackWarning)]
assert len(fallback) == 1, [str(w.message) for w in caught]
print(f"klest {klest.__version__} from {package}: backend {klest.native.BACKEND}")
print(f"warning at import: {fallback[0].message}")
print("kl(N(0,1), N(0.1,1)) =", klest.kl(klest.Normal(loc=0.0, scale=1.0),
                                         klest.Normal(loc=0.1, scale=1.0)))
EOF

step "klest demo (make demo's job), pure-NumPy engine"
demo_start=$SECONDS
"$VENV/bin/klest" demo > "$WORK/demo.txt" 2> "$WORK/demo.err" || {
    cat "$WORK/demo.err" >&2
    echo "FAIL: klest demo" >&2
    exit 1
}
cat "$WORK/demo.txt"
echo "(klest demo took $((SECONDS - demo_start)) s)"
# the same two rows tests/test_readme.py checks against the compiled engine
for row in "| k2 | 0.00239 ± 0.00045 | 0.0025 | 1.41809 ± 0.00084 | 1.418 |" \
           "| k3 | -0.00091 ± 0.00053 | 0 | 1.6838 ± 0.0046 | 1.695 |"; do
    grep -qF -- "$row" "$WORK/demo.txt" || { echo "FAIL: demo lacks the row: $row" >&2; exit 1; }
done
echo "README's rows: identical"

step "engine tests, KLEST_NATIVE=0"
"$VENV/bin/python" -m pip install --quiet "pytest>=8" "hypothesis>=6.100" "mpmath>=1.3"
cd "$WORK/src"  # the tests and pyproject's pytest settings; the pytest script (not
# `python -m pytest`, which would put the copy's klest first on sys.path) imports the
# installed klest
TESTS=()
for t in tests/test_engine.py tests/test_engine_statistics.py tests/test_engine_layers.py \
         tests/test_engine_arguments.py tests/test_golden_stream.py \
         tests/test_stream_contract.py tests/test_moment_kernels.py \
         tests/test_native_fallback.py; do
    [[ -f "$t" ]] && TESTS+=("$t")
done
KLEST_NATIVE=0 "$VENV/bin/pytest" -p no:cacheprovider "${TESTS[@]}" "$@"

step "PASS: installed without a compiler, demo and engine tests ran on the pure-NumPy engine"
