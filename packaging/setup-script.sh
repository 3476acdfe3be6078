#!/usr/bin/env bash
# Azure Machine Learning compute instance setup script: checks, while the instance is being
# created, that it can reach everything Azure Machine Learning needs, and leaves the agent
# installed for later use (`aml-netcheck check` on the instance's terminal).
#
# Setup: upload this script and aml-netcheck.pyz (`packaging/build zipapp`) to the same folder of
# the workspace file share, and choose the script as the compute instance's creation (or startup)
# script. The instance runs it as root; its output lands in the setup script log.
#
#   setup-script.sh               fail the setup on critical findings (the default)
#   setup-script.sh --report-only always succeed; read the report instead
#
# Exit status. Azure Machine Learning marks the compute instance failed when its setup script
# exits non-zero. That is the right outcome for critical findings (exit 2): the instance cannot
# reach what Azure Machine Learning needs, and failing here, with the reason in the setup log,
# beats an instance that looks healthy and then fails in confusing ways. Warnings (1) and "could
# not decide" (3: the agent's own trouble, or the deadline reached) are logged but do not block
# the instance: an uncertain result must not cost the user their compute. Nor does a check that
# cannot run (no Python >= 3.10): it is skipped with a warning, in the setup log (stderr) and in
# the system log (tag aml-netcheck-setup), never silently.
#
# The full JSON report is /var/log/aml-netcheck.json.
set -euo pipefail

REPORT=/var/log/aml-netcheck.json
INSTALL_DIR=/usr/local/lib/aml-netcheck
report_only=false
[ "${1:-}" = --report-only ] && report_only=true

log() { echo "aml-netcheck-setup: $*"; }
warn() {
  echo "aml-netcheck-setup: warning: $*" >&2
  if command -v logger >/dev/null 2>&1; then logger -t aml-netcheck-setup -p user.warning -- "warning: $*" 2>/dev/null || true; fi
}

# The instance's own Python >= 3.10: /usr/bin/python3 (Ubuntu 22.04's is 3.10), else a conda environment.
python=""
for candidate in "${AML_NETCHECK_PYTHON:-}" python3 python3.14 python3.13 python3.12 python3.11 python3.10 \
    /anaconda/envs/*/bin/python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    python=$(command -v "$candidate")
    break
  fi
done
if [ -z "$python" ]; then
  warn "network check skipped: no Python >= 3.10 on this instance (python3: $(command -v python3 >/dev/null 2>&1 && python3 -V 2>&1 || echo none)); set AML_NETCHECK_PYTHON to one"
  exit 0
fi

# Run from local disk, not from the file share the script came from: the share is what may be
# unreachable, and the local copy stays for interactive use.
install -d "$INSTALL_DIR"
install -m 0644 "$(dirname "$(readlink -f "$0")")/aml-netcheck.pyz" "$INSTALL_DIR/aml-netcheck.pyz"
cat >/usr/local/bin/aml-netcheck <<WRAPPER
#!/bin/sh
exec "$python" -I "$INSTALL_DIR/aml-netcheck.pyz" "\$@"
WRAPPER
chmod 0755 /usr/local/bin/aml-netcheck
log "$(/usr/local/bin/aml-netcheck --version) with $python"

# --wait retries failing checks until healthy or 300 s have passed; the agent never runs past it.
status=0
/usr/local/bin/aml-netcheck check --wait 300 --format json --output "$REPORT" || status=$?

# The findings, readable, in the setup log.
[ -s "$REPORT" ] && "$python" -I - "$REPORT" <<'SUMMARY' || true
import json, sys
report = json.load(open(sys.argv[1]))
print(f"aml-netcheck-setup: status {report['status']}, {len(report['findings'])} finding(s)")
for f in report["findings"]:
    print(f"  {f['severity'].upper()} [{f['code']}] {f['summary']}")
    if f.get("remedy"):
        print(f"    fix: {f['remedy']}")
SUMMARY

case "$status" in
  0) log "network healthy" ;;
  1) log "warnings only: see $REPORT" ;;
  2) log "critical network problems: see $REPORT"
     $report_only || exit 1 ;;
  *) log "the check could not decide (exit $status): see $REPORT" ;;
esac
exit 0
