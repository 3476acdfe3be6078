#!/usr/bin/env bash
# Stages and packs dist/aml-netcheck_VERSION-1_ARCH.deb. Called by `packaging/build deb`, which
# sets PIP (the build tools' pip), WHEEL, VERSION, DIST and WORK (a scratch directory).
#
# The package is a private virtual environment in /opt/aml-netcheck on the distribution's own
# /usr/bin/python3, with its compiled dependencies for that interpreter: build it on the release
# it is for (Debian 12 here; an ubuntu:24.04 container for Ubuntu 24.04). Depends pins the
# python3 minor version the environment was built with, so dpkg refuses a mismatch instead of the
# agent failing at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PIP:?}" "${WHEEL:?}" "${VERSION:?}" "${DIST:?}" "${WORK:?}"

PREFIX=/opt/aml-netcheck
SYSTEM_PYTHON=/usr/bin/python3
STAGE=$WORK/root
DOC=$STAGE/usr/share/doc/aml-netcheck
MAINTAINER=${DEB_MAINTAINER:-aml-netcheck maintainers <aml-netcheck@example.invalid>}
# PEP 440 pre-releases sort before the release; in Debian that is "~" (0.2.0rc1 -> 0.2.0~rc1).
DEB_VERSION=$(sed -E 's/^([0-9.]+)\.?((a|b|rc|dev)[0-9]*)/\1~\2/' <<<"$VERSION")-1
ARCH=$(dpkg --print-architecture)
PY_MINOR=$("$SYSTEM_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PY_NEXT=$("$SYSTEM_PYTHON" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')

rm -rf "$WORK"
mkdir -p "$STAGE"

# The environment is made where it will live, under the staging root, then every mention of the
# staging root (script shebangs, activate, pyvenv.cfg's command line) is rewritten to the real
# path. No pip inside: nothing should pip-install into a tree dpkg owns.
"$SYSTEM_PYTHON" -m venv --without-pip "$STAGE$PREFIX"
"$PIP" --python "$STAGE$PREFIX/bin/python3" install -q --disable-pip-version-check \
  --no-compile --only-binary=:all: "$WHEEL"
grep -rlIF "$STAGE" "$STAGE$PREFIX" | xargs -r sed -i "s|$STAGE$PREFIX|$PREFIX|g"
if grep -rlF "$STAGE" "$STAGE"; then
  echo "make_deb: the files above still name the staging directory" >&2
  exit 1
fi
# Bytecode now, owned by dpkg: the sandboxed services cannot write it (ProtectSystem=strict), and
# a root run writing it would leave files dpkg does not know. unchecked-hash: dpkg replaces
# sources and bytecode together, so checking one against the other is wasted work at every start.
"$SYSTEM_PYTHON" -m compileall -q -j0 --invalidation-mode unchecked-hash -s "$STAGE" -p / \
  "$STAGE$PREFIX/lib" >/dev/null

install -d "$STAGE/usr/bin" "$STAGE/lib/systemd/system" "$STAGE/etc/aml-netcheck" "$DOC" "$STAGE/DEBIAN"
ln -s "$PREFIX/bin/aml-netcheck" "$STAGE/usr/bin/aml-netcheck"
install -m 0644 systemd/*.service systemd/*.timer "$STAGE/lib/systemd/system/"
install -m 0644 packaging/config.toml "$STAGE/etc/aml-netcheck/config.toml"
install -m 0644 packaging/debian/copyright "$DOC/copyright"
cat >"$DOC/changelog.Debian" <<CHANGELOG
aml-netcheck ($DEB_VERSION) unstable; urgency=medium

  * aml-netcheck $VERSION, built by packaging/build deb.

 -- $MAINTAINER  $(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}")
CHANGELOG
gzip -9n "$DOC/changelog.Debian"

install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$STAGE/DEBIAN/"
echo /etc/aml-netcheck/config.toml >"$STAGE/DEBIAN/conffiles"
cat >"$STAGE/DEBIAN/control" <<CONTROL
Package: aml-netcheck
Version: $DEB_VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Depends: python3 (>= $PY_MINOR~), python3 (<< $PY_NEXT~), iproute2, nftables, procps
Section: net
Priority: optional
Description: network diagnostic agent for Azure Machine Learning compute
 Checks from the node itself that every network path Azure Machine Learning needs works (DNS,
 TCP, UDP, TLS, HTTP, WebSocket) and says which NSG rule, firewall rule, DNS record or proxy
 setting fixes what does not. Ships systemd units for a daemon with a watchdog, a periodic
 check on a timer and a wait-online gate; none is enabled on installation.
CONTROL

mkdir -p "$DIST"
OUT=$DIST/aml-netcheck_${DEB_VERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$OUT" >/dev/null
echo "$OUT"
