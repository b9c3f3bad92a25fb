# infra/local/python.sh — sourced (not run) by infra/local/setup.sh and infra/check-template.sh.
# Owns the choice of the interpreter that the project's venvs are made with: a Python 3.11 that
# has the venv module and a working ensurepip (Debian ships ensurepip and the pip wheel it
# installs in python3.11-venv, apart from python3.11; without them `python -m venv` leaves a venv
# without pip behind).

# python_ok PYTHON: whether PYTHON is a 3.11 that can make a venv with pip in it.
python_ok() {
    "$1" -c 'import sys, venv, ensurepip
ensurepip.version()     # finds the bundled pip wheel, or raises
sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1
}

# find_python: print the first good one of $RELAY_PYTHON, pyenv's 3.11, python3.11, python3;
# status 1 (nothing printed) when there is none.
find_python() {
    local c pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    for c in ${RELAY_PYTHON:-} "$pyenv_root"/versions/3.11*/bin/python3.11 python3.11 python3; do
        if python_ok "$c"; then
            echo "$c"
            return 0
        fi
    done
    return 1
}
