#!/usr/bin/env bash
# Stages and packs dist/aml-netcheck_VERSION-1_ARCH.deb. Called by `packaging/build deb`, which
# sets PIP (the build tools' pip), WHEEL, VERSION, DIST and WORK (a scratch directory).
#
# The package is the program and the Python packages it depends on, private to it in
# /usr/lib/aml-netcheck (Debian's place for a program's private modules, python-policy 1.5), run
# by the distribution's own /usr/bin/python3 through packaging/debian/aml-netcheck, with the
# compiled dependencies for that interpreter: build it on the release it is for (Debian 12 here;
# an ubuntu:24.04 container for Ubuntu 24.04). Depends pins the python3 minor version it was built
# with, so dpkg refuses a mismatch instead of the agent failing at run time, and names the shared
# libraries its compiled modules link (dpkg-shlibdeps). Bytecode is compiled at installation
# (postinst, py3compile) and removed at removal (prerm, py3clean), as dh_python3 does.
# packaging/lintian-overrides explains each lintian tag left.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PIP:?}" "${WHEEL:?}" "${VERSION:?}" "${DIST:?}" "${WORK:?}"

PREFIX=/usr/lib/aml-netcheck
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

# --target: a plain directory of packages, no virtual environment (whose scripts would name its
# own interpreter instead of /usr/bin/python3). Only what runs: no console scripts of the
# dependencies (bin/), no test extension (multidict's _testcapi), no bytecode (see above).
"$PIP" --python "$SYSTEM_PYTHON" install -q --disable-pip-version-check --no-compile --only-binary=:all: \
  --no-warn-script-location --target "$STAGE$PREFIX" "$WHEEL"
rm -rf "$STAGE$PREFIX/bin"
find "$STAGE$PREFIX" \( -name '_testcapi*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
if grep -rlF "$STAGE" "$STAGE"; then
  echo "make_deb: the files above still name the staging directory" >&2
  exit 1
fi
# As dh_strip does for shared objects: no symbols or notes, which only a debugger reads.
find "$STAGE$PREFIX" -name '*.so' -exec strip --remove-section=.comment --remove-section=.note \
  --strip-unneeded {} +
# The libraries those objects link, as dpkg-shlibdeps words the dependency (libc6 (>= 2.x), ...).
# It finds the package's root by its DEBIAN directory and wants a debian/control to read.
mkdir -p "$STAGE/DEBIAN" "$WORK/debian"
printf 'Source: aml-netcheck\n\nPackage: aml-netcheck\nArchitecture: any\n' >"$WORK/debian/control"
SHLIBS_DEPENDS=$(cd "$WORK" && find "$STAGE$PREFIX" -name '*.so' -print0 |
  xargs -0 dpkg-shlibdeps -O --warnings=0 | sed -n 's/^shlibs:Depends=//p')
[ -n "$SHLIBS_DEPENDS" ] || { echo "make_deb: dpkg-shlibdeps found no library dependency" >&2; exit 1; }

install -d "$STAGE/usr/bin" "$STAGE/lib/systemd/system" "$STAGE/usr/lib/sysusers.d" "$STAGE/usr/lib/tmpfiles.d" \
  "$STAGE/usr/lib/systemd/catalog" "$STAGE/usr/share/lintian/overrides" "$STAGE/etc/aml-netcheck" "$DOC" \
  "$STAGE/DEBIAN"
install -m 0755 packaging/debian/aml-netcheck "$STAGE/usr/bin/aml-netcheck"
install -m 0644 systemd/*.service systemd/*.timer "$STAGE/lib/systemd/system/"
install -m 0644 systemd/aml-netcheck.sysusers "$STAGE/usr/lib/sysusers.d/aml-netcheck.conf"
install -m 0644 systemd/aml-netcheck.tmpfiles "$STAGE/usr/lib/tmpfiles.d/aml-netcheck.conf"
# The journald message catalog, from the code being packaged (systemd's dpkg trigger on this
# directory runs journalctl --update-catalog). The generators import the checkout's `agent` (the
# package has the same code as aml_netcheck.agent) with the packaged dependencies.
GENERATE_PATH="$PWD:$STAGE$PREFIX"
PYTHONPATH="$GENERATE_PATH" "$SYSTEM_PYTHON" packaging/make_catalog.py "$STAGE/usr/lib/systemd/catalog/aml-netcheck.catalog"
# aml-netcheck(1), generated from the CLI being packaged.
install -d "$STAGE/usr/share/man/man1"
PYTHONPATH="$GENERATE_PATH" "$SYSTEM_PYTHON" packaging/make_manpage.py "$STAGE/usr/share/man/man1/aml-netcheck.1"
gzip -9n "$STAGE/usr/share/man/man1/aml-netcheck.1"
install -m 0644 packaging/lintian-overrides "$STAGE/usr/share/lintian/overrides/aml-netcheck"
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
Depends: python3 (>= $PY_MINOR~), python3 (<< $PY_NEXT~), $SHLIBS_DEPENDS, iproute2, nftables, procps, systemd | systemd-standalone-sysusers | systemd-sysusers
Section: net
Priority: optional
Description: network diagnostic agent for Azure Machine Learning compute
 Checks from the node itself that every network path Azure Machine Learning
 needs works (DNS, TCP, UDP, TLS, HTTP, WebSocket, SMB) and says which NSG
 rule, firewall rule, DNS record or proxy setting fixes what does not.
 .
 Ships systemd units for a daemon with a watchdog, a periodic check on a
 timer and a wait-online gate; none is enabled on installation.
CONTROL

mkdir -p "$DIST"
OUT=$DIST/aml-netcheck_${DEB_VERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$OUT" >/dev/null
echo "$OUT"
