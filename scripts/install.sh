# Sourced by the test scripts: installs a missing system package with apt-get, the way a
# fresh Debian or Ubuntu machine (the CI's) needs, and says plainly what to install by hand
# where apt-get cannot run.
#
#   apt_install "what it is for" package...

apt_install() {
    local why=$1
    shift
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "plexus's tests need $* ($why), and apt-get is not available here to install" \
            "them: install them with your system's package manager and run again." >&2
        exit 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo)
        else
            echo "plexus's tests need $* ($why); installing them takes root (apt-get)," \
                "and this user is not root and has no password-less sudo: install them" \
                "and run again." >&2
            exit 1
        fi
    fi
    echo "installing $* ($why) with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
