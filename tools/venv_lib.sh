# Shared by tools/bootstrap.sh and tools/upstream_env.sh: build a virtual environment only when its inputs change.
#   venv_begin NAME DIR LOG FILE...   exits 0 at once when DIR/.stamp matches the hash of FILE...; otherwise
#                                     starts a fresh DIR (torch first, from REQ's pin) and defines `install`
#   venv_done                         writes the stamp
#   venv_stamp FILE...                prints that hash (tools/scgpt_env.sh keys its cached venv by it)
# Callers set REQ (the requirements file whose torch pin is installed first).
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

venv_stamp() {  # venv_stamp FILE...: the hash venv_begin compares with DIR/.stamp (also names cached venvs)
  cat "$@" | sha256sum | cut -c1-16
}

venv_begin() {
  VENV_NAME=$1 VENV_DIR=$2 VENV_LOG=$3
  shift 3
  VENV_STAMP=$(venv_stamp "$@")
  if [ -f "$VENV_DIR/.stamp" ] && [ "$(cat "$VENV_DIR/.stamp")" = "$VENV_STAMP" ]; then
    exit 0
  fi
  echo "$VENV_NAME: building $VENV_DIR with $($PYTHON --version) (a few minutes the first time; log: $VENV_LOG)" >&2
  mkdir -p "$(dirname "$VENV_LOG")"
  : >"$VENV_LOG"
  rm -rf "$VENV_DIR"
  install "$PYTHON" -m venv "$VENV_DIR"
  install "$VENV_DIR/bin/pip" install --upgrade pip
  # torch first, from the pinned CPU-capable release, so that nothing pulls a newer CUDA build.
  install "$VENV_DIR/bin/pip" install "$(grep '^torch==' "$REQ")"
}

install() {
  if ! "$@" >>"$VENV_LOG" 2>&1; then
    grep -v "^WARNING: Location" "$VENV_LOG" | tail -n 30 >&2
    echo "$VENV_NAME: failed: $*" >&2
    exit 1
  fi
}

venv_done() {
  echo "$VENV_STAMP" > "$VENV_DIR/.stamp"
  echo "$VENV_NAME: $VENV_DIR ready" >&2
}
