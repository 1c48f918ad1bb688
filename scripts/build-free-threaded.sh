#!/usr/bin/env bash
# Build free-threaded CPython 3.13 (--disable-gil) into a cache directory and
# make a venv on it with greenline (this checkout, editable) and what the
# tests need.
#
#   scripts/build-free-threaded.sh            build or reuse, then the venv
#   scripts/build-free-threaded.sh --python   print the venv's python (after building)
#
# GREENLINE_FT_CACHE  where the interpreter goes (default ~/.cache/greenline/python3.13t);
#                     reused at once when its python runs with sys._is_gil_enabled() False
# GREENLINE_FT_VENV   the venv (default .venv-3.13t in this checkout)
# GREENLINE_FT_JOBS   make -j (default: the number of cores)
#
# The source is Debian trixie's python3.13 source package (3.13.5), fetched with
# a private apt sources list (deb-src, the Debian archive keyring) so the
# machine's own apt configuration is untouched.  Upstream source only: the
# Debian patches are not applied.  No PGO/LTO (the build takes about 8 minutes
# on 2 cores; with PGO it would be 3-4 times that).
#
# greenlet is pinned to 3.3.0: 3.5.x does not compile on 3.13t (it uses
# 3.14-only critical-section internals) and 3.2.x turns the GIL back on at
# import.  It is built from source with build-free-threaded.greenlet.patch
# (see there): 3.3.0 leaves CPython's per-thread chain of critical sections
# as it is across a switch, and a green thread that switches inside one
# crashes the interpreter ("PyMutex_Unlock: unlocking mutex that is not
# locked").  hypothesis stays below 6.150, whose newer releases need a Rust
# extension built from source.  The rest of the test extra (trustme,
# requests, redis, gunicorn, flask, django...) is installed where it installs;
# the tests that need a missing one skip (trustme does not: no cryptography
# for 3.13t).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${GREENLINE_FT_CACHE:-$HOME/.cache/greenline/python3.13t}"
VENV="${GREENLINE_FT_VENV:-$REPO/.venv-3.13t}"
JOBS="${GREENLINE_FT_JOBS:-$(nproc 2>/dev/null || echo 2)}"
PY="$CACHE/bin/python3.13t"
SUITE=trixie
PACKAGE=python3.13

if [[ "${1:-}" == "--python" ]]; then
    echo "$VENV/bin/python"
    exit 0
fi

log() { echo "build-free-threaded: $*" >&2; }

# pip, without the warnings about this machine's extra index locations.
pip_quiet() {
    "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

interpreter_ok() {
    [[ -x "$1" ]] && "$1" -c 'import sys; sys.exit(0 if hasattr(sys, "_is_gil_enabled") and not sys._is_gil_enabled() else 1)' 2>/dev/null
}

# What CPython's configure needs for the modules the tests use (ssl, zlib,
# ctypes, lzma, bz2, sqlite3, readline); installed only if missing, and only
# as root (CI, these machines).
BUILD_DEPS=(gcc make patch libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev
            libsqlite3-dev libreadline-dev libncurses-dev uuid-dev libexpat1-dev)

install_build_deps() {
    local missing=() pkg
    for pkg in "${BUILD_DEPS[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        if [[ $(id -u) -ne 0 ]]; then
            log "missing build packages (install them as root): ${missing[*]}"
            return
        fi
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

build_interpreter() {
    install_build_deps
    local work="$CACHE.build"
    rm -rf "$work"
    mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/src"
    # A private apt configuration: only trixie's deb-src, signed by the Debian
    # archive keyring; its own lists and cache, so the system's stay as they are.
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    echo "deb-src [signed-by=$keyring] http://deb.debian.org/debian $SUITE main" >"$work/apt/sources.list"
    local apt_opts=(
        -o "Dir::Etc::SourceList=$work/apt/sources.list"
        -o "Dir::Etc::SourceParts=$work/apt/none"
        -o "Dir::State::Lists=$work/apt/lists"
        -o "Dir::Cache=$work/apt/cache"
        -o "APT::Sandbox::User=root"
        -o "Debug::NoLocking=1"
    )
    mkdir -p "$work/apt/none"
    log "fetching Debian $SUITE's $PACKAGE source package"
    apt-get "${apt_opts[@]}" -qq update
    (cd "$work/src" && apt-get "${apt_opts[@]}" -qq source --download-only "$PACKAGE")
    local orig
    orig="$(ls "$work"/src/${PACKAGE}_*.orig.tar.* | head -n1)"
    tar -xf "$orig" -C "$work/src"
    local srcdir
    srcdir="$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'Python-*' | head -n1)"
    [[ -n "$srcdir" ]] || { log "no Python-* directory in $orig"; exit 1; }
    log "configuring $(basename "$srcdir") --disable-gil --prefix=$CACHE"
    (
        cd "$srcdir"
        ./configure --disable-gil --prefix="$CACHE" --with-ensurepip=install >"$work/configure.log" 2>&1
        log "make -j$JOBS (log: $work/make.log)"
        make -j"$JOBS" >"$work/make.log" 2>&1
        # Staged, then moved in whole: a build killed half-way never leaves
        # an interpreter in the cache that runs but lacks half its library.
        make install DESTDIR="$work/stage" >"$work/install.log" 2>&1
    )
    rm -rf "$CACHE"
    mkdir -p "$(dirname "$CACHE")"
    mv "$work/stage$CACHE" "$CACHE"
    interpreter_ok "$PY" || { log "the built interpreter does not run with the GIL off"; exit 1; }
    rm -rf "$work"
    log "installed $("$PY" -VV | head -n1) in $CACHE"
}

# The venv is remade only when this script, pyproject.toml or the checkout
# it points to changed since it was last made.
venv_stamp() {
    cat "$0" "$REPO/scripts/build-free-threaded.greenlet.patch" "$REPO/pyproject.toml" | sha256sum | cut -d' ' -f1
    echo "$REPO"
}

make_venv() {
    local stamp="$VENV/.greenline-stamp"
    if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$(venv_stamp)" ]] && interpreter_ok "$VENV/bin/python"; then
        log "reusing the venv $VENV"
        return
    fi
    if [[ ! -x "$VENV/bin/python" ]] || ! interpreter_ok "$VENV/bin/python"; then
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
    fi
    local pip=(pip_quiet "$VENV/bin/python" -m pip -q --disable-pip-version-check)
    # The machine's pip constraints may pin versions made for the default
    # build; this venv has its own.
    export PIP_CONSTRAINT=
    # What greenline needs, then what the tests need.  greenline itself with
    # --no-deps: its declared greenlet>=3.0 would let pip pick a newer one.
    # greenlet 3.3.0 with scripts/build-free-threaded.greenlet.patch: a
    # switch suspends the critical sections of the greenlet switched out
    # and resumes those of the one switched in (without it a green thread
    # that blocks inside one, e.g. in sorted() over a generator or in a
    # buffered file's read, crashes or deadlocks the interpreter).
    local gwork
    gwork="$(mktemp -d)"
    "${pip[@]}" download --no-deps --no-binary :all: "greenlet==3.3.0" -d "$gwork"
    tar -xzf "$gwork"/greenlet-3.3.0.tar.gz -C "$gwork"
    patch -d "$gwork/greenlet-3.3.0" -p1 -s <"$REPO/scripts/build-free-threaded.greenlet.patch"
    "${pip[@]}" install "setuptools>=68" wheel
    "${pip[@]}" wheel --no-deps --no-build-isolation "$gwork/greenlet-3.3.0" -w "$gwork/wheel"
    "${pip[@]}" install --force-reinstall --no-deps "$gwork"/wheel/greenlet-3.3.0-*.whl
    rm -rf "$gwork"
    # greenline's own dependencies as pyproject.toml declares them (but
    # greenlet), and the test extra: the packages the suite cannot run
    # without are required; the others are tried one by one.
    local required=() optional=() kind dep
    while read -r kind dep; do
        if [[ "$kind" == req ]]; then required+=("$dep"); else optional+=("$dep"); fi
    done < <("$VENV/bin/python" - "$REPO/pyproject.toml" <<'PYEOF'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
def name(spec):
    return re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0].lower()
for spec in project["dependencies"]:
    if name(spec) != "greenlet":
        print("req", spec.replace(" ", ""))
# pytest, its timeout and hypothesis (pure Python below 6.150) are needed
# by every test module; psutil by many.  matplotlib only draws the bench's
# charts (the default build's run covers that).
pinned = {"pytest": "pytest>=8", "pytest-timeout": "pytest-timeout>=2.3",
          "hypothesis": "hypothesis>=6,<6.150", "psutil": "psutil>=5.9"}
print(*(f"req {spec}" for spec in pinned.values()), sep="\n")
for spec in project.get("optional-dependencies", {}).get("test", []):
    if name(spec) not in pinned and name(spec) not in ("matplotlib", "greenline"):
        print("opt", spec.replace(" ", ""))
PYEOF
)
    "${pip[@]}" install "greenlet==3.3.0" "${required[@]}"
    "${pip[@]}" install --no-deps -e "$REPO"
    for dep in "${optional[@]}"; do
        "${pip[@]}" install "$dep" >/dev/null 2>&1 ||
            log "$dep does not install on 3.13t: the tests that need it skip"
    done
    venv_stamp >"$stamp"
}

mkdir -p "$(dirname "$CACHE")"
# One builder at a time (a session and CI may share the cache).
exec 9>"$CACHE.lock"
flock 9
if interpreter_ok "$PY"; then
    log "reusing $CACHE ($("$PY" -c 'import sys; print(sys.version.split()[0])'), GIL off)"
else
    build_interpreter
fi
make_venv
echo "$VENV/bin/python"
