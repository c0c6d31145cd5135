#!/usr/bin/env bash
# Build Apache TVM instrumented for branch coverage (gcc-12 --coverage), for HiGen's gcov collector
# (docs/coverage.md, "Building TVM and OpenVINO with coverage"), plus a virtualenv whose `import tvm`
# is that build.
#
# Resumable and idempotent: every step checks what already exists (source at the pinned commits,
# virtualenv, cmake configuration, ninja's own state), so running it again after an interruption
# continues where it stopped, and running it after a finished build only re-checks it.
# Start it in the background on a shared machine:
#   nohup nice -n 19 bash experiments/build_instrumented_tvm.sh > ~/.cache/higen/tvm-build.log 2>&1 &
#
# Settings (environment):
#   HIGEN_TVM_CACHE  where the three folders below go (default ~/.cache/higen)
#   TVM_COV_SRC      TVM source tree        (default $HIGEN_TVM_CACHE/tvm-src)
#   TVM_COV_BUILD    instrumented build tree (default $HIGEN_TVM_CACHE/tvm-cov-build; keep it there:
#                    the .gcno/.gcda files are found by absolute path)
#   TVM_COV_VENV     virtualenv that imports this build (default $HIGEN_TVM_CACHE/tvm-cov-venv)
#   TVM_COMMIT       TVM commit (default: apache/tvm main of 2026-08-22, after v0.27.dev0; the
#                    apache-tvm 0.27.0 wheel's commit is not in the public snapshot used here)
#   TVM_GIT, TVM_FFI_GIT, DLPACK_GIT, LIBBACKTRACE_GIT  where to clone from (default: a local
#                    snapshot under /work/.mirror if present, else GitHub)
#   LLVM_CONFIG      llvm-config of LLVM >= 15 (default llvm-config-22: the wheel uses LLVM 22)
#   TVM_COV_OPT      optimization level (default -O1; see docs/coverage.md)
#   JOBS             parallel compile jobs (default: number of CPUs)
#   PYTHON           interpreter the virtualenv is made from (default python3; HiGen must be
#                    installed in it, the virtualenv sees its packages)
set -euo pipefail

CACHE=${HIGEN_TVM_CACHE:-$HOME/.cache/higen}
SRC=${TVM_COV_SRC:-$CACHE/tvm-src}
BUILD=${TVM_COV_BUILD:-$CACHE/tvm-cov-build}
VENV=${TVM_COV_VENV:-$CACHE/tvm-cov-venv}
TVM_COMMIT=${TVM_COMMIT:-5d4dc8721307cf9677becacf0395c19be130e206}
LLVM_CONFIG=${LLVM_CONFIG:-llvm-config-22}
OPT=${TVM_COV_OPT:--O1}
JOBS=${JOBS:-$(nproc)}
PYTHON=${PYTHON:-python3}

die() { echo "build_instrumented_tvm: error: $*" >&2; exit 1; }
say() { echo "[$(date +%H:%M:%S)] $*"; }
disk() { du -sh "$@" 2>/dev/null | awk '{printf "%s %s  ", $2, $1}'; echo; }
origin() {  # origin OWNER/NAME: the local snapshot of a GitHub repository if there is one, else its URL
    local mirror="/work/.mirror/${1/\//+}/repo"
    if [ -d "$mirror" ]; then echo "$mirror"; else echo "https://github.com/$1"; fi
}
TVM_GIT=${TVM_GIT:-$(origin apache/tvm)}
TVM_FFI_GIT=${TVM_FFI_GIT:-$(origin apache/tvm-ffi)}
DLPACK_GIT=${DLPACK_GIT:-$(origin dmlc/dlpack)}
LIBBACKTRACE_GIT=${LIBBACKTRACE_GIT:-$(origin ianlancetaylor/libbacktrace)}

# -- 1. tools ----------------------------------------------------------------------------------------
check_tools() {
    local tool
    for tool in gcc-12 g++-12 ninja git "$LLVM_CONFIG" "$PYTHON"; do
        command -v "$tool" >/dev/null || die "$tool not found: apt-get install gcc-12 g++-12 ninja-build git llvm-22-dev (or set LLVM_CONFIG/PYTHON)"
    done
    local llvm_major
    llvm_major=$("$LLVM_CONFIG" --version | cut -d. -f1)
    [ "$llvm_major" -ge 15 ] || die "TVM needs LLVM >= 15, $LLVM_CONFIG is $("$LLVM_CONFIG" --version): apt-get install llvm-22-dev"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PYTHON is older than 3.10, which TVM needs: set PYTHON"
    say "tools: $(g++-12 --version | head -1), ninja $(ninja --version), LLVM $("$LLVM_CONFIG" --version), $("$PYTHON" --version)"
}

# -- 2. source at the pinned commits ----------------------------------------------------------------
checkout() {  # checkout DIR ORIGIN COMMIT: a clone of ORIGIN in DIR with COMMIT checked out; 1 if not found
    local dir=$1 from=$2 commit=$3
    if [ -e "$dir/.git" ]; then
        [ "$(git -C "$dir" rev-parse HEAD)" = "$commit" ] && return 0
        git -C "$dir" cat-file -e "$commit^{commit}" 2>/dev/null || git -C "$dir" fetch -q origin "$commit" 2>/dev/null \
            || return 1
        git -C "$dir" checkout -q "$commit" || die "cannot check out $commit in $dir (local changes?): remove $dir"
        return 0
    fi
    [ -z "$(ls -A "$dir" 2>/dev/null)" ] || die "$dir exists but is not a git clone: remove it"
    rmdir "$dir" 2>/dev/null || true
    say "cloning $from -> $dir"
    git clone -q --no-checkout "$from" "$dir" || die "cannot clone $from: fetch the repository or set its *_GIT variable"
    git -C "$dir" checkout -q "$commit" 2>/dev/null \
        || { git -C "$dir" fetch -q origin "$commit" 2>/dev/null && git -C "$dir" checkout -q "$commit"; }
}

from_ffi_sdist() {  # from_ffi_sdist DIR: a tvm-ffi submodule taken from apache-tvm-ffi's sdist of the same release
    local dir=$1 ffi="$SRC/3rdparty/tvm-ffi" tag version sdist inner
    tag=$(git -C "$ffi" describe --tags --exact-match HEAD 2>/dev/null) \
        || die "the commit pinned for ${dir#"$ffi"/} is not in its origin and tvm-ffi is not at a release: fetch a newer snapshot"
    version=$(echo "${tag#v}" | sed 's/-post/.post/')
    sdist=$(ls "$CACHE"/sdist/apache_tvm_ffi-"$version".tar.gz 2>/dev/null) || {
        say "${dir#"$ffi"/}: pinned commit not in its origin; taking it from PyPI's apache-tvm-ffi $version sdist"
        "$PYTHON" -m pip download -q --no-deps --no-binary apache-tvm-ffi "apache-tvm-ffi==$version" -d "$CACHE/sdist" \
            || die "pip could not download the sdist of apache-tvm-ffi $version"
        sdist=$(ls "$CACHE"/sdist/apache_tvm_ffi-"$version".tar.gz) || die "no apache_tvm_ffi-$version.tar.gz in $CACHE/sdist"
    }
    inner="${dir#"$ffi"/}"
    rm -rf "$dir" && mkdir -p "$dir"
    tar xzf "$sdist" -C "$dir" --strip-components=$(($(tr -cd / <<<"$inner" | wc -c) + 2)) "apache_tvm_ffi-$version/$inner" \
        || die "$sdist has no $inner"
    echo "apache-tvm-ffi==$version sdist" > "$dir/.from-sdist"
}

pinned() { git -C "$1" ls-tree HEAD "$2" | awk '$2 == "commit" {print $3}'; }  # pinned DIR SUBMODULE

get_source() {
    mkdir -p "$(dirname "$SRC")"
    checkout "$SRC" "$TVM_GIT" "$TVM_COMMIT" || die "commit $TVM_COMMIT is not in $TVM_GIT: use a newer snapshot or set TVM_COMMIT"
    # Only the submodule a CPU build needs (the others are CUDA/OpenCL), and its own two; those two
    # come from apache-tvm-ffi's sdist when their origin lacks the pinned commit (the sdist of a
    # release holds exactly its submodules).
    local ffi="$SRC/3rdparty/tvm-ffi" sub
    checkout "$ffi" "$TVM_FFI_GIT" "$(pinned "$SRC" 3rdparty/tvm-ffi)" \
        || die "the tvm-ffi commit pinned by TVM is not in $TVM_FFI_GIT: use a newer snapshot"
    for sub in dlpack libbacktrace; do
        [ -e "$ffi/3rdparty/$sub/.from-sdist" ] && continue
        local from=$DLPACK_GIT
        [ "$sub" = libbacktrace ] && from=$LIBBACKTRACE_GIT
        checkout "$ffi/3rdparty/$sub" "$from" "$(pinned "$ffi" "3rdparty/$sub")" || from_ffi_sdist "$ffi/3rdparty/$sub"
    done
    # What setuptools_scm would write for a wheel of this commit (TVM's fallback says 0.26.dev0).
    local described
    described=$(git -C "$SRC" describe --tags --long --match 'v*' HEAD 2>/dev/null) || described="v0.0.dev0-0-g${TVM_COMMIT:0:9}"
    TVM_VERSION=$(echo "$described" | sed -E 's/^v([0-9]+\.[0-9]+)\.dev[0-9]+-([0-9]+)-g([0-9a-f]+)$/\1.dev\2+g\3/; s/^v([^-]+)-0-g[0-9a-f]+$/\1/; s/^v([^-]+)-([0-9]+)-g([0-9a-f]+)$/\1.post\2+g\3/')
    printf '__version__ = version = "%s"\n__commit_id__ = commit_id = "%s"\n' "$TVM_VERSION" "$TVM_COMMIT" \
        > "$SRC/python/tvm/_version.py"
    # TVM's Python package finds its libraries in <source>/build/lib (python/tvm/libinfo.py).
    if [ ! -e "$SRC/build" ]; then
        ln -s "$BUILD" "$SRC/build"
    elif [ "$(readlink -f "$SRC/build")" != "$(readlink -f "$BUILD")" ]; then
        die "$SRC/build exists and is not a link to $BUILD: remove it"
    fi
    say "source: TVM $TVM_VERSION ($TVM_COMMIT), tvm-ffi $(git -C "$ffi" describe --tags --always HEAD) in $SRC"
}

# -- 3. virtualenv: cmake >= 3.26 (tvm-ffi needs it), Z3, tvm-ffi at the pinned commit, TVM's Python ---
make_venv() {
    [ -x "$VENV/bin/python" ] || { say "creating virtualenv $VENV"; "$PYTHON" -m venv --system-site-packages "$VENV"; }
    local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
    "$VENV/bin/python" -c 'import cmake, mlc_z3_static' 2>/dev/null \
        || "${pip[@]}" "cmake>=3.26,<4" "mlc-z3-static>=4.16" || die "pip could not install cmake and mlc-z3-static into $VENV"
    z3_package
    local ffi_commit stamp
    ffi_commit=$(git -C "$SRC/3rdparty/tvm-ffi" rev-parse HEAD)
    stamp="$VENV/.tvm-ffi-$ffi_commit"
    if [ ! -e "$stamp" ]; then
        say "building tvm-ffi's Python package from $SRC/3rdparty/tvm-ffi (a few minutes)"
        CMAKE_BUILD_PARALLEL_LEVEL=$JOBS "${pip[@]}" "$SRC/3rdparty/tvm-ffi" \
            || die "pip could not build $SRC/3rdparty/tvm-ffi (see the output above)"
        touch "$stamp"
    fi
    # Register TVM's source Python package (a .pth) under its own version, so that the virtualenv
    # neither imports nor reports the apache-tvm wheel of the environment it was made from.
    local site dist
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -rf "$site"/apache_tvm-*.dist-info
    dist="$site/apache_tvm-$TVM_VERSION.dist-info"
    mkdir -p "$dist"
    echo "$SRC/python" > "$site/apache_tvm_cov.pth"
    printf 'Metadata-Version: 2.1\nName: apache-tvm\nVersion: %s\nSummary: instrumented build of %s (HiGen)\n' \
        "$TVM_VERSION" "$TVM_COMMIT" > "$dist/METADATA"
    echo "higen-build_instrumented_tvm" > "$dist/INSTALLER"
    printf '%s,,\n' "apache_tvm_cov.pth" "${dist##*/}/METADATA" "${dist##*/}/INSTALLER" "${dist##*/}/RECORD" > "$dist/RECORD"
    say "virtualenv: $VENV ($("$VENV/bin/cmake" --version | head -1))"
}

# Z3 as TVM's CMake looks for it (z3::libz3), but linked as a shared library: mlc-z3-static's libz3.a
# is built with a newer GCC than 12 (libtvm_compiler.so then fails to link: undefined
# std::string::_M_replace_cold, __cxa_call_terminate). The headers stay mlc-z3-static's; the
# library is z3-solver's libz3.so of the same version (manylinux: it needs only an old libstdc++).
z3_package() {
    local site version dir="$VENV/z3-shared"
    site=$("$VENV/bin/python" -c 'import mlc_z3_static, os; print(os.path.dirname(mlc_z3_static.__file__))')
    version=$("$VENV/bin/python" -c 'from importlib.metadata import version; import re; print(re.match(r"[0-9]+[.][0-9]+[.][0-9]+", version("mlc-z3-static")).group())')
    "$VENV/bin/python" -c "import z3, sys; sys.exit(not z3.get_full_version().startswith('Z3 $version'))" 2>/dev/null \
        || "$VENV/bin/python" -m pip install -q --disable-pip-version-check "z3-solver==$version.0" \
        || die "pip could not install z3-solver==$version.0 (the version of mlc-z3-static's headers) into $VENV"
    local lib
    lib=$("$VENV/bin/python" -c 'import z3, os, glob; print(sorted(glob.glob(os.path.join(os.path.dirname(z3.__file__), "lib", "libz3.so.*")))[0])')
    mkdir -p "$dir"
    cat > "$dir/Z3Config.cmake" <<CMAKE
# Written by HiGen's build_instrumented_tvm.sh: Z3 $version, headers of mlc-z3-static, z3-solver's libz3.so
add_library(z3::libz3 SHARED IMPORTED)
set_target_properties(z3::libz3 PROPERTIES
  IMPORTED_LOCATION "$lib"
  INTERFACE_COMPILE_FEATURES "cxx_noexcept"
  INTERFACE_INCLUDE_DIRECTORIES "$site/static/include")
set(Z3_FOUND TRUE)
CMAKE
    printf 'set(PACKAGE_VERSION "%s")\nset(PACKAGE_VERSION_COMPATIBLE TRUE)\n' "$version" > "$dir/Z3ConfigVersion.cmake"
    Z3_CONFIG_DIR=$dir
}

# -- 4. configure ---------------------------------------------------------------------------------------
configure() {
    local link="--coverage -Wl,-u,__gcov_dump -Wl,-u,__gcov_reset"
    # Release with the optimization replaced: TVM puts -O2 before CMAKE_CXX_FLAGS and CMake puts
    # CMAKE_CXX_FLAGS_RELEASE last, so the level must go there. No -g: gcov needs none.
    # HIDE_PRIVATE_SYMBOLS=OFF: with it ON, TVM links with -Wl,--exclude-libs,ALL, which hides every
    # symbol that comes from a static archive, libgcov's __gcov_dump/__gcov_reset included.
    local args=(
        -S "$SRC" -B "$BUILD" -G Ninja
        -DCMAKE_BUILD_TYPE=Release
        -DCMAKE_C_COMPILER=gcc-12 -DCMAKE_CXX_COMPILER=g++-12
        -DCMAKE_C_FLAGS=--coverage -DCMAKE_CXX_FLAGS=--coverage
        "-DCMAKE_C_FLAGS_RELEASE=$OPT -DNDEBUG" "-DCMAKE_CXX_FLAGS_RELEASE=$OPT -DNDEBUG"
        "-DCMAKE_SHARED_LINKER_FLAGS=$link" "-DCMAKE_MODULE_LINKER_FLAGS=$link"
        -DCMAKE_EXE_LINKER_FLAGS=--coverage
        "-DUSE_LLVM=$(command -v "$LLVM_CONFIG")" -DUSE_CUDA=OFF -DUSE_Z3=ON "-DZ3_DIR=$Z3_CONFIG_DIR"
        "-DPython3_EXECUTABLE=$VENV/bin/python"
        -DHIDE_PRIVATE_SYMBOLS=OFF -DUSE_GTEST=OFF -DUSE_CCACHE=OFF -DUSE_ALTERNATIVE_LINKER=OFF
        -DSUMMARIZE=ON
    )
    local stamp="$BUILD/.higen-configure" wanted
    wanted=$(printf '%s\n' "${args[@]}" "$TVM_COMMIT")
    if [ -f "$BUILD/build.ninja" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
        say "configure: done before ($BUILD/build.ninja)"
        return 0
    fi
    say "configuring $BUILD"
    mkdir -p "$BUILD"
    "$VENV/bin/cmake" "${args[@]}" || die "cmake failed (see the output above); fix it and run this script again"
    printf '%s' "$wanted" > "$stamp"
}

# -- 5. build -----------------------------------------------------------------------------------------
progress() {  # every 5 minutes: objects compiled so far and the disk used
    local total
    total=$(ninja -C "$BUILD" -t targets all 2>/dev/null | grep -c '\.o: ') || total='?'
    local sleeper
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    while :; do
        sleep 300 & sleeper=$!
        wait "$sleeper"
        say "progress: $(find "$BUILD" -name '*.o' | wc -l)/$total objects, $(disk "$BUILD")"
    done
}

build() {
    say "building with ninja -j$JOBS ($(ninja -C "$BUILD" -t targets all | grep -c '\.o: ') objects in all, $(find "$BUILD" -name '*.o' | wc -l) there already)"
    progress &
    PROGRESS_MONITOR=$!
    trap 'kill "$PROGRESS_MONITOR" 2>/dev/null || true' EXIT
    NINJA_STATUS="[%f/%t %es] " ninja -C "$BUILD" -j "$JOBS" \
        || die "ninja stopped (failed or interrupted; see above): run this script again (after a fix), it continues"
    kill "$PROGRESS_MONITOR" 2>/dev/null || true
}

# -- 6. check -----------------------------------------------------------------------------------------
check() {
    local lib
    # libtvm_runtime.so exports libgcov's __gcov_dump/__gcov_reset; libtvm_compiler.so links against it
    # and uses those. One dump covers both: libgcov chains every library's counters through the one
    # exported __gcov_master.
    for lib in "$BUILD/lib/libtvm_compiler.so" "$BUILD/lib/libtvm_runtime.so"; do
        [ -f "$lib" ] || die "$lib was not built"
        [ "$(nm -D "$lib" | grep -cE ' [TU] __gcov_(dump|reset)$')" = 2 ] \
            || die "$lib neither exports nor uses __gcov_dump and __gcov_reset: check the linker flags"
    done
    [ "$(nm -D --defined-only "$BUILD/lib/libtvm_runtime.so" | grep -cE ' T __gcov_(dump|reset)$')" = 2 ] \
        || die "$BUILD/lib/libtvm_runtime.so does not export __gcov_dump and __gcov_reset: check the linker flags"
    "$VENV/bin/python" - "$SRC" "$BUILD" <<'EOF' || die "the virtualenv does not import the instrumented build (see above)"
import os, sys
src, build = (os.path.realpath(p) for p in sys.argv[1:3])
import tvm
assert os.path.realpath(tvm.__file__).startswith(src + os.sep), f"tvm imported from {tvm.__file__}, not {src}"
from higen.coverage.gcov import instrumented_libraries
libs = [path for path, dump, _ in instrumented_libraries() if dump]
assert any(os.path.realpath(p).startswith(build + os.sep) for p in libs), f"no instrumented library of {build} loaded: {libs}"
print(f"tvm {tvm.__version__} from {tvm.__file__}; instrumented libraries loaded: {libs}")
EOF
    say "done. Use: $VENV/bin/python -m higen.main ... --tvm-cov-src $SRC --tvm-cov-build $BUILD"
}

check_tools
get_source
make_venv
configure
say "disk: $(disk "$SRC" "$BUILD" "$VENV")"
build
say "disk: $(disk "$SRC" "$BUILD" "$VENV")"
check
