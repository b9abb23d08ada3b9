#!/usr/bin/env bash
# Build the Debian package: sft_VERSION-1_ARCH.deb in OUT_DIR (default: the
# current directory). Install it with: apt install ./sft_*.deb
#
#   packaging/build-deb.sh [OUT_DIR]
#
# SFT_DEB_PROFILE=dev builds it from the debug profile (used by
# packaging/test-deb.sh in CI to reuse the test build; ship release packages).
set -euo pipefail
out=$(realpath -m "${1:-.}")
cd "$(dirname "$0")/.."
profile=${SFT_DEB_PROFILE:-release}
case $profile in
    release) dir=release ;;
    dev) dir=debug ;;
    *) echo "build-deb.sh: SFT_DEB_PROFILE must be release or dev" >&2; exit 2 ;;
esac
target=$(realpath -m "${CARGO_TARGET_DIR:-target}")

if ! command -v cargo-deb >/dev/null; then
    echo "build-deb.sh: installing cargo-deb (once)" >&2
    # a known version (3.8 still accepts the dev profile test-deb.sh uses), built
    # in a directory of its own, not in the project's target directory
    env -u CARGO_TARGET_DIR cargo install cargo-deb --version 3.8.0 --locked
fi
cargo build --locked --profile "$profile"

# the man page and completions come from the binary itself
gen=$target/$dir/packaging
mkdir -p "$gen"
bin=$target/$dir/sft
"$bin" man | gzip -9n > "$gen/sft.1.gz"
"$bin" completions bash > "$gen/sft.bash"
"$bin" completions zsh > "$gen/_sft"
"$bin" completions fish > "$gen/sft.fish"

mkdir -p "$out"
cargo deb --no-build --locked --strip --profile "$profile" --output "$out"
ls -1 "$out"/sft_*.deb
