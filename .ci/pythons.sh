# Sourced by .ci/run and .ci/refresh-constraints: the interpreters the project supports and tests.
# OLDEST and NEWEST are the supported minor versions the suite runs on (README: 3.11 or newer).
OLDEST=3.11
NEWEST=3.13

# find_python X.Y: print the path of a Python X.Y interpreter, or fail saying where it looked.
# Looks at pythonX.Y and python3 on PATH, then pyenv's versions, then /usr/local and /usr.
find_python() {
    local want="$1" c root
    local -a candidates=("python$want" python3)
    root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    # newest patch release first
    while IFS= read -r c; do candidates+=("$c"); done \
        < <(ls -d "$root"/versions/"$want".*/bin/python 2>/dev/null | sort -rV)
    candidates+=("/usr/local/bin/python$want" "/usr/bin/python$want")
    for c in "${candidates[@]}"; do
        c="$(command -v "$c" 2>/dev/null)" || continue
        # a pyenv shim exists for versions pyenv has not activated: ask the interpreter itself
        if [ "$("$c" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$want" ] \
            && "$c" -c 'import venv, ensurepip' 2>/dev/null; then
            "$c" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    echo "error: no Python $want with venv and ensurepip found (looked for python$want and" \
        "python3 on PATH, $root/versions/$want.*, /usr/local/bin, /usr/bin);" \
        "install it, e.g. 'pyenv install $want' or 'apt-get install python$want-venv'" >&2
    return 1
}
